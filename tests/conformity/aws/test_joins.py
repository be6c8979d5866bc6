"""The cross-service joins behind the checks that answer the rest of Prowler's (conformity/aws/joins.py),
on hand-built records: each join's positive and negative case, what stays unjudged when a service was
not read, and fuzzed input for the fact builders that read API answers."""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.conformity.aws import joins
from cloudward.conformity.aws.collectors.backup import _tag_conditions
from cloudward.conformity.aws.collectors.cloudtrail import records_bedrock
from cloudward.conformity.aws.collectors.ec2 import _public_subnets, nacl_world_open_all
from cloudward.conformity.aws.model import Resource
from cloudward.conformity.aws.scan import Judge, link

ACCOUNT = "123456789012"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _r(type_: str, id_: str, region: str = "us-east-1", arn: str = "", service: str = "x", **facts: Any) -> Resource:
    return Resource(service=service, type=type_, id=id_, region=region, account=ACCOUNT, arn=arn, facts=facts)


@cache
def _judge() -> Judge:
    from cloudward.cli.common import load_all_rules

    return Judge(load_all_rules())


def _fired(resources: list[Resource]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in _judge().findings(resources):
        out.setdefault(finding.rule_id, []).append(finding.location["resource_id"])
    return out


def test_replication_counts_only_another_region_and_spares_replicas():
    src = _r("s3_bucket", "src", "global", bucket_region="us-east-1", replication_destinations=["near"])
    near = _r("s3_bucket", "near", "global", bucket_region="us-east-1", replication_destinations=["far"])
    far = _r("s3_bucket", "far", "global", bucket_region="eu-west-1", replication_destinations=[])
    elsewhere = _r("s3_bucket", "out", "global", bucket_region="us-east-1",
                   replication_destinations=["another-accounts-bucket"])
    unread = _r("s3_bucket", "unread", "global")  # its describe failed: nothing known
    link([src, near, far, elsewhere, unread])
    assert src.facts["replicates_cross_region"] is False  # a copy in the same region is not disaster recovery
    assert near.facts["replicates_cross_region"] is True and far.facts["replica_of"] == ["near"]
    assert elsewhere.facts["replicates_cross_region"] is True
    fired = _fired([src, near, far, elsewhere, unread])["aws.s3.bucket_no_cross_region_replication"]
    assert fired == ["src"]  # not the replica, not the unread bucket


def test_vpc_spread_is_judged_only_when_two_regions_were_scanned():
    one = [_r("ebs_defaults", ACCOUNT), _r("vpc", "vpc-1", is_default=False)]
    assert "aws.ec2.vpcs_single_region" not in _fired(one + link(one))
    two = [*one, _r("ebs_defaults", ACCOUNT, "eu-west-1"), _r("vpc", "vpc-2", "eu-west-1", is_default=True)]
    assert "aws.ec2.vpcs_single_region" in _fired(two + link(two))  # the default VPC does not count
    spread = [*two, _r("vpc", "vpc-3", "eu-west-1", is_default=False)]
    assert "aws.ec2.vpcs_single_region" not in _fired(spread + link(spread))


VOL = f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/vol-1"


def _selection(**kw: Any) -> dict[str, Any]:
    return {"plan": "p", "selection": "s", "resources": [], "not_resources": [], "tags": [], **kw}


def test_backup_selection_by_arn_wildcard_exclusion_and_tags():
    assert joins.selection_covers(_selection(resources=["arn:aws:ec2:*:*:volume/*"]), VOL, {})
    assert joins.selection_covers(_selection(resources=["*"]), VOL, {})
    assert not joins.selection_covers(_selection(resources=["arn:aws:rds:*:*:db:*"]), VOL, {})
    assert not joins.selection_covers(_selection(resources=["*"], not_resources=[VOL]), VOL, {})
    by_tag = _selection(tags=_tag_conditions({"ListOfTags": [
        {"ConditionType": "STRINGEQUALS", "ConditionKey": "aws:ResourceTag/backup", "ConditionValue": "daily"}]}))
    assert joins.selection_covers(by_tag, VOL, {"backup": "daily"})
    assert not joins.selection_covers(by_tag, VOL, {"backup": "never"})
    both = _selection(resources=["arn:aws:ec2:*:*:volume/*"], tags=_tag_conditions({"Conditions": {
        "StringLike": [{"ConditionKey": "aws:ResourceTag/env", "ConditionValue": "prod*"}]}}))
    assert joins.selection_covers(both, VOL, {"env": "prod-eu"})
    assert not joins.selection_covers(both, VOL, {"env": "dev"})


def test_backup_and_ssm_coverage_only_where_the_service_was_read():
    vol = _r("volume", "vol-1", arn=VOL, tags={})
    vol_eu = _r("volume", "vol-2", "eu-west-1", arn=VOL.replace("us-east-1", "eu-west-1").replace("vol-1", "vol-2"))
    plans = _r("backup_region", "us-east-1", plan_count=1, selections=[_selection(resources=["arn:aws:rds:*:*:db:*"])])
    inst = _r("instance", "i-1", arn="arn:i-1", running=True, state="running")
    inst_eu = _r("instance", "i-2", "eu-west-1", arn="arn:i-2", running=True)
    ssm = _r("ssm_region", "us-east-1", managed_instances={})
    records = [vol, vol_eu, plans, inst, inst_eu, ssm]
    extra = link(records)
    assert {(r.type, r.id, r.service) for r in extra} == {("backup_coverage", "vol-1", "backup"),
                                                           ("ssm_instance", "i-1", "ssm")}
    fired = _fired(records + extra)
    assert fired["aws.backup.volume_not_protected"] == ["vol-1"]
    assert fired["aws.ssm.instance_not_managed"] == ["i-1"]
    ssm.facts["managed_instances"] = {"i-1": "Online"}
    plans.facts["selections"].append(_selection(resources=[VOL]))
    fired = _fired(records + link(records))
    assert "aws.backup.volume_not_protected" not in fired and "aws.ssm.instance_not_managed" not in fired


def test_organization_facts_reach_guardduty_and_config():
    def records(org: Resource | None, delegated: list[str] | None = None) -> list[Resource]:
        gd = _r("guardduty_region", "us-east-1", detector_present=True, enabled=True, administrator_account="")
        if delegated is not None:
            gd.facts["delegated_admins"] = delegated
        cfg = _r("config_region", "us-east-1", org_aggregators_all_regions=[])
        out = [gd, cfg] + ([org] if org else [])
        return out + link(out)

    standalone = _fired(records(_r("organization", ACCOUNT, in_organization=False)))
    for rule in ("aws.guardduty.no_delegated_admin", "aws.guardduty.not_centrally_managed",
                 "aws.config.no_org_aggregator"):
        assert rule in standalone
    member = _fired(records(_r("organization", ACCOUNT, in_organization=True, management_account=False)))
    assert "aws.guardduty.no_delegated_admin" not in member  # a member cannot see the delegation: unjudged
    assert "aws.config.no_org_aggregator" in member  # no aggregator is visible either way
    managed = records(None)
    managed[0].facts["administrator_account"] = "999999999999"  # moto cannot answer this; real GuardDuty does
    assert "aws.guardduty.not_centrally_managed" not in _fired(managed)
    admin = _fired(records(_r("organization", ACCOUNT, in_organization=True, management_account=True,
                              delegated_services={"guardduty.amazonaws.com": [ACCOUNT],
                                                  "config.amazonaws.com": ["999999999999"]}), delegated=[ACCOUNT]))
    assert "aws.guardduty.not_centrally_managed" not in admin and "aws.guardduty.no_delegated_admin" not in admin
    assert "aws.config.no_org_aggregator" in admin  # a delegated admin but no all-region organization aggregator


def test_bedrock_logging_and_nacl_all_traffic_and_public_subnets():
    assert records_bedrock({"EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": True}]})
    assert not records_bedrock({"EventSelectors": [{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": True}]})
    data = {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                                                           {"Field": "resources.type",
                                                            "Equals": ["AWS::Bedrock::Model"]}]}]}
    assert records_bedrock(data)
    s3_only = {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                                                              {"Field": "resources.type",
                                                               "Equals": ["AWS::S3::Object"]}]}]}
    assert not records_bedrock(s3_only)
    allow_all = {"RuleNumber": 100, "Protocol": "-1", "RuleAction": "allow", "Egress": False, "CidrBlock": "0.0.0.0/0"}
    deny_all = {**allow_all, "RuleNumber": 90, "RuleAction": "deny"}
    https = {"RuleNumber": 80, "Protocol": "6", "RuleAction": "allow", "Egress": False, "CidrBlock": "0.0.0.0/0",
             "PortRange": {"From": 443, "To": 443}}
    assert nacl_world_open_all([allow_all, https]) and not nacl_world_open_all([allow_all, deny_all])
    assert not nacl_world_open_all([https, {**allow_all, "Egress": True}])
    public = _public_subnets([
        {"VpcId": "v", "Associations": [{"Main": True}], "Routes": [{"DestinationCidrBlock": "10.0.0.0/16"}]},
        {"VpcId": "v", "Associations": [{"SubnetId": "s-pub"}],
         "Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1"}]},
        {"VpcId": "v", "Associations": [{"SubnetId": "s-nat"}],
         "Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-1"}]}])
    assert public("v", "s-pub") and not public("v", "s-nat") and not public("v", "s-main")


# --- hostile answers: the fact builders never crash on well-typed but odd input ----------------------

TEXT = st.text(max_size=30)
FIELD = st.fixed_dictionaries({"Field": st.sampled_from(["eventCategory", "resources.type", "readOnly", "eventSource",
                                                         "resources.ARN", "x"]),
                               "Equals": st.lists(st.sampled_from(["Data", "Management", "AWS::Bedrock::Model",
                                                                   "true", "false", "*"]) | TEXT, max_size=3)})
SELECTORS = st.fixed_dictionaries({}, optional={
    "EventSelectors": st.lists(st.fixed_dictionaries({}, optional={
        "ReadWriteType": st.sampled_from(["All", "ReadOnly", "WriteOnly"]) | TEXT,
        "IncludeManagementEvents": st.booleans()}), max_size=3),
    "AdvancedEventSelectors": st.lists(st.fixed_dictionaries({"FieldSelectors": st.lists(FIELD, max_size=4)}),
                                       max_size=3)})
ENTRY = st.fixed_dictionaries({"RuleNumber": st.integers(1, 32767), "Protocol": st.sampled_from(["-1", "6", "17"]),
                               "RuleAction": st.sampled_from(["allow", "deny"]), "Egress": st.booleans()},
                              optional={"CidrBlock": st.sampled_from(["0.0.0.0/0", "10.0.0.0/8"]) | TEXT,
                                        "Ipv6CidrBlock": st.sampled_from(["::/0"]) | TEXT})
TAGS = st.dictionaries(TEXT, TEXT, max_size=4)
SELECTION = st.fixed_dictionaries({}, optional={
    "Resources": st.lists(st.sampled_from(["*", "arn:aws:ec2:*:*:volume/*", "[", "arn:*"]) | TEXT, max_size=3),
    "NotResources": st.lists(TEXT, max_size=2),
    "ListOfTags": st.lists(st.fixed_dictionaries({"ConditionKey": TEXT, "ConditionValue": TEXT}), max_size=3),
    "Conditions": st.dictionaries(st.sampled_from(["StringEquals", "StringNotEquals", "StringLike", "StringNotLike",
                                                   "Odd"]),
                                  st.lists(st.fixed_dictionaries({"ConditionKey": TEXT, "ConditionValue": TEXT}),
                                           max_size=2), max_size=4)})


@SETTINGS
@given(SELECTORS)
def test_fuzz_bedrock_selectors(selectors):
    assert records_bedrock(selectors) in (True, False)


@SETTINGS
@given(st.lists(ENTRY, max_size=8))
def test_fuzz_nacl_entries(entries):
    assert nacl_world_open_all(entries) in (True, False)


@SETTINGS
@given(SELECTION, TEXT, TAGS)
def test_fuzz_backup_selection(selection, arn, tags):
    parsed = {"plan": "p", "selection": "s", "resources": list(selection.get("Resources", [])),
              "not_resources": list(selection.get("NotResources", [])), "tags": _tag_conditions(selection)}
    assert joins.selection_covers(parsed, arn, tags) in (True, False)


ROUTE = st.fixed_dictionaries({}, optional={"DestinationCidrBlock": st.sampled_from(["0.0.0.0/0", "10.0.0.0/8"]) | TEXT,
                                            "DestinationIpv6CidrBlock": st.sampled_from(["::/0"]) | TEXT,
                                            "GatewayId": st.sampled_from(["igw-1", "local", "vgw-1"]) | TEXT})
TABLE = st.fixed_dictionaries({}, optional={
    "VpcId": st.sampled_from(["v", "w"]), "Routes": st.lists(ROUTE, max_size=3),
    "Associations": st.lists(st.fixed_dictionaries({}, optional={"Main": st.booleans(),
                                                                 "SubnetId": st.sampled_from(["s-1", "s-2"])}),
                             max_size=3)})


@SETTINGS
@given(st.lists(TABLE, max_size=5), st.sampled_from(["v", "w", "x"]), st.sampled_from(["s-1", "s-2", "s-3"]))
def test_fuzz_route_tables(tables, vpc, subnet):
    assert _public_subnets(tables)(vpc, subnet) in (True, False)
