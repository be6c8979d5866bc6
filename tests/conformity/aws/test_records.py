"""Rules moto cannot represent, proven on hand-built resource records (the same records collectors
produce), plus the cross-service `link` step and the fact builders, tested on their own."""

from __future__ import annotations

from typing import Any

import pytest

from cloudward.conformity.aws.collectors._base import grants_admin, public_statements
from cloudward.conformity.aws.collectors.ec2 import expand_permissions, nacl_world_open, world_facts
from cloudward.conformity.aws.model import Resource
from cloudward.conformity.aws.scan import Judge, link

ROOT_OK = {"mfa_enabled": True, "hardware_mfa": True, "virtual_mfa": False, "access_keys_present": False,
           "last_used_days": 200}
USER_OK = {"console_access": True, "mfa_enabled": True, "active_key_count": 1, "max_active_key_age_days": 30,
           "max_active_key_unused_days": 1, "active_keys_never_used": 0, "console_unused_days": 3,
           "admin_equivalent": False, "direct_policies": False}

# rule id -> (why moto cannot show it, subject, facts that fire it, facts that do not)
HAND_BUILT: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "aws.iam.root_access_keys": ("moto's root user never has access keys", "root_account",
                                 {**ROOT_OK, "access_keys_present": True}, ROOT_OK),
    "aws.iam.root_no_hardware_mfa": ("root MFA cannot be enabled in moto", "root_account",
                                     {**ROOT_OK, "hardware_mfa": False, "virtual_mfa": True}, ROOT_OK),
    "aws.iam.root_recently_used": ("moto's credential report has no root usage", "root_account",
                                   {**ROOT_OK, "last_used_days": 2}, ROOT_OK),
    "aws.iam.access_key_old": ("moto cannot backdate an access key", "iam_user",
                               {**USER_OK, "max_active_key_age_days": 400}, USER_OK),
    "aws.iam.access_key_unused": ("moto cannot backdate key use", "iam_user",
                                  {**USER_OK, "max_active_key_unused_days": 120}, USER_OK),
    "aws.iam.console_unused": ("moto cannot backdate a password's last use", "iam_user",
                               {**USER_OK, "console_unused_days": 90}, USER_OK),
    "aws.iam.password_policy_missing": ("the weak account sets a weak policy instead (the missing case is also "
                                        "seen on moto in test_a_fix_closes_the_finding_in_the_store)",
                                        "password_policy", {"present": False},
                                        {"present": True, "minimum_length": 14}),
    "aws.guardduty.features_disabled": ("moto's detectors have no protection plans", "guardduty_region",
                                        {"enabled": True, "disabled_features": ["EKS_AUDIT_LOGS"]},
                                        {"enabled": True, "disabled_features": []}),
}
# Rules the weak account fires on moto whose passing case moto cannot build.
NEGATIVE_ONLY: dict[str, tuple[str, dict[str, Any]]] = {
    "aws.iam.root_no_mfa": ("root_account", ROOT_OK),
    "aws.s3.bucket_no_mfa_delete": ("s3_bucket", {"versioning": True, "mfa_delete": True}),
    "aws.lambda.no_dead_letter_queue": ("lambda_function", {"dead_letter_queue": True}),
}


@pytest.fixture(scope="module")
def judge() -> Judge:
    from cloudward.cli.common import load_all_rules

    return Judge(load_all_rules())


def _fires(judge: Judge, rule_id: str, subject: str, facts: dict[str, Any]) -> bool:
    record = Resource(service=rule_id.split(".")[1], type=subject, id="x", region="us-east-1",
                      account="123456789012", arn="arn:aws:test", facts=facts)
    return rule_id in {f.rule_id for f in judge.findings([record])}


@pytest.mark.parametrize("rule_id", sorted(HAND_BUILT))
def test_hand_built_records(judge, rule_id):
    _reason, subject, positive, negative = HAND_BUILT[rule_id]
    assert _fires(judge, rule_id, subject, positive)
    assert not _fires(judge, rule_id, subject, negative)


@pytest.mark.parametrize("rule_id", sorted(NEGATIVE_ONLY))
def test_passing_cases_moto_cannot_build(judge, rule_id):
    subject, facts = NEGATIVE_ONLY[rule_id]
    assert not _fires(judge, rule_id, subject, facts)


def test_missing_facts_never_fire(judge):
    assert not _fires(judge, "aws.iam.root_access_keys", "root_account", {})
    assert not _fires(judge, "aws.kms.rotation_off", "kms_key", {"customer_managed": False})


def test_world_facts_cover_ranges_all_protocols_and_ipv6():
    entries = expand_permissions([
        {"IpProtocol": "tcp", "FromPort": 2370, "ToPort": 2380, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "udp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 10250, "ToPort": 10250, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
    ])
    facts = world_facts(entries)
    assert facts["world_open_ports"] == [2375, 2376, 2379, 2380, 10250]  # not 6379 (private), not udp 22
    assert facts["world_open_all_ports"] is False and facts["world_open_ipv6"] is True
    assert facts["world_open_port_count"] == 12
    everything = world_facts(expand_permissions([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]))
    assert everything["world_open_all_ports"] is True and 22 in everything["world_open_ports"]


def test_nacl_first_matching_world_entry_decides():
    allow_all = {"RuleNumber": 100, "Protocol": "-1", "RuleAction": "allow", "Egress": False, "CidrBlock": "0.0.0.0/0"}
    deny_ssh = {"RuleNumber": 50, "Protocol": "6", "RuleAction": "deny", "Egress": False, "CidrBlock": "0.0.0.0/0",
                "PortRange": {"From": 22, "To": 22}}
    narrow = {"RuleNumber": 10, "Protocol": "6", "RuleAction": "deny", "Egress": False, "CidrBlock": "10.0.0.0/8",
              "PortRange": {"From": 22, "To": 22}}
    assert nacl_world_open([allow_all], 22)
    assert not nacl_world_open([allow_all, deny_ssh], 22)
    assert nacl_world_open([allow_all, deny_ssh], 3389)
    assert nacl_world_open([allow_all, narrow], 22)  # a deny for another source does not stop the world


def test_policy_helpers():
    assert grants_admin({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}})
    assert not grants_admin({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b"}]})
    assert not grants_admin({"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]})
    public = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}
    scoped = {**public, "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-123"}}}
    assert public_statements({"Statement": [public]}) == [public]
    assert public_statements({"Statement": [scoped]}) == []


def _r(type_: str, id_: str, region: str = "us-east-1", arn: str = "", **facts: Any) -> Resource:
    return Resource(service="x", type=type_, id=id_, region=region, account="123456789012", arn=arn, facts=facts)


def test_link_joins_instances_to_profiles_and_groups():
    profile = _r("instance_profile", "p", "global", arn="arn:aws:iam::123456789012:instance-profile/p",
                 role_names=["r"], role_admin=True, admin_via=["role:r:attached:AdministratorAccess"])
    group = _r("security_group", "sg-1", world_open_ports=[6379], world_open_all_ports=False, world_open=True)
    inst = _r("instance", "i-1", instance_profile_arn=profile.arn, security_group_ids=["sg-1"])
    bare = _r("instance", "i-2", region="eu-west-1", instance_profile_arn="", security_group_ids=["sg-1"])
    link([profile, group, inst, bare])
    assert inst.facts["role_admin"] is True and inst.facts["world_open_ports"] == [6379]
    assert bare.facts["role_admin"] is False and "world_open_ports" not in bare.facts  # sg-1 is in another region


def test_link_decides_region_coverage_from_multi_region_trails():
    trail = _r("trail", "t", "us-east-1", multi_region=True, logging=True, s3_bucket="logs")
    bucket = _r("s3_bucket", "logs", "global", public=True, access_logging=False)
    regions = [_r("cloudtrail_region", r, r) for r in ("us-east-1", "eu-west-1")]
    extra = link([trail, bucket, *regions])
    assert all(r.facts["logged"] for r in regions)
    assert trail.facts["bucket_public"] is True and trail.facts["bucket_access_logging"] is False
    assert extra[0].type == "cloudtrail_account" and extra[0].facts["multi_region_logging"] is True
    trail.facts["logging"] = False
    extra = link([trail, bucket, *regions])
    assert not any(r.facts["logged"] for r in regions) and extra[0].facts["multi_region_logging"] is False


def test_rule_files_load_with_remediation_snippets_and_framework_links():
    from cloudward.cli.common import load_all_rules
    from cloudward.conformity.frameworks import load_framework

    rules = {r.id: r for r in load_all_rules() if r.engine_name == "aws"}
    assert len(rules) >= 100
    for rule in rules.values():
        assert rule.source.startswith("builtin:cloudward.conformity.aws/rules/")
        for part in ("Console:", "CLI:", "Terraform:"):
            assert part in rule.remediation, (rule.id, part)
        assert rule.references and rule.attack and rule.tags
    cis = load_framework("cis-aws")
    controls = {c["id"]: c for c in cis["controls"]}
    mapped = {r for c in controls.values() for r in c.get("rules") or []}
    assert mapped <= set(rules), mapped - set(rules)
    for rule in rules.values():  # a rule's own CIS tags agree with the framework file
        for control in rule.compliance.get("cis-aws", []):
            assert rule.id in (controls[control].get("rules") or []), (rule.id, control)
    assert all(c.get("reason") for c in controls.values() if c.get("scored") is False)


def test_framework_statuses():
    from cloudward.conformity.frameworks import evaluate_framework

    framework = {"id": "t", "title": "t", "controls": [
        {"id": "1", "title": "a", "rules": ["aws.iam.root_access_keys"]},
        {"id": "2", "title": "b", "rules": ["aws.guardduty.not_enabled"]},
        {"id": "3", "title": "c", "rules": ["aws.kms.rotation_off"]},
        {"id": "4", "title": "d", "rules": ["aws.ec2.instance_imdsv1"]},
        {"id": "5", "title": "e", "scored": False, "reason": "manual"}]}
    rules = {r: object() for r in ("aws.iam.root_access_keys", "aws.guardduty.not_enabled", "aws.kms.rotation_off",
                                   "aws.ec2.instance_imdsv1")}
    scan = {"id": "s", "stats": {"services": ["iam", "guardduty", "ec2"], "failed_units": ["guardduty/us-east-1"]},
            "rule_ids": ["aws.ec2.instance_imdsv1"]}
    out = evaluate_framework(framework, scan, rules)  # type: ignore[arg-type]
    assert [c["status"] for c in out["controls"]] == ["pass", "error", "not checked", "fail", "not scored"]


def test_data_event_selectors_count_only_when_they_cover_every_bucket_or_function() -> None:
    from cloudward.conformity.aws.collectors.cloudtrail import data_events

    def classic(mode: str, *resources: tuple[str, list[str]]) -> dict[str, Any]:
        return {"EventSelectors": [{"ReadWriteType": mode, "IncludeManagementEvents": True,
                                    "DataResources": [{"Type": t, "Values": v} for t, v in resources]}]}

    every = classic("All", ("AWS::S3::Object", ["arn:aws:s3"]), ("AWS::Lambda::Function", ["arn:aws:lambda"]))
    assert data_events(every) == {"s3_object_read_events": True, "s3_object_write_events": True,
                                  "lambda_invoke_events": True}
    reads = data_events(classic("ReadOnly", ("AWS::S3::Object", ["arn:aws:s3:::"])))
    assert reads["s3_object_read_events"] and not reads["s3_object_write_events"]
    one_bucket = data_events(classic("All", ("AWS::S3::Object", ["arn:aws:s3:::payroll/"]),
                                     ("AWS::Lambda::Function", ["arn:aws:lambda:us-east-1:1:function:f"])))
    assert not any(one_bucket.values())
    management_only = {"EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": True}]}
    assert not any(data_events(management_only).values())

    def advanced(*fields: tuple[str, str, list[str]]) -> dict[str, Any]:
        return {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": f, op: v} for f, op, v in fields]}]}

    writes = data_events(advanced(("eventCategory", "Equals", ["Data"]),
                                  ("resources.type", "Equals", ["AWS::S3::Object"]), ("readOnly", "Equals", ["false"])))
    assert writes["s3_object_write_events"] and not writes["s3_object_read_events"]
    narrowed = data_events(advanced(("eventCategory", "Equals", ["Data"]),
                                    ("resources.type", "Equals", ["AWS::S3::Object"]),
                                    ("resources.ARN", "StartsWith", ["arn:aws:s3:::payroll/"])))
    assert not narrowed["s3_object_read_events"] and not narrowed["s3_object_write_events"]
    management = data_events(advanced(("eventCategory", "Equals", ["Management"])))
    assert not any(management.values())
    assert data_events(advanced(("eventCategory", "Equals", ["Data"]),
                                ("resources.type", "Equals", ["AWS::Lambda::Function"])))["lambda_invoke_events"]


def test_link_counts_data_events_of_logging_multi_region_trails_only() -> None:
    events: dict[str, Any] = {"s3_object_read_events": True, "s3_object_write_events": True,
                              "lambda_invoke_events": True}
    local = _r("trail", "local", "us-east-1", multi_region=False, logging=True, **events)
    stopped = _r("trail", "stopped", "us-east-1", multi_region=True, logging=False, **events)
    regions = [_r("cloudtrail_region", r, r) for r in ("us-east-1", "eu-west-1")]
    account = link([local, stopped, *regions])[0].facts
    assert account["s3_object_read_events_logged"] is False and account["lambda_invoke_events_logged"] is False
    wide = _r("trail", "wide", "us-east-1", multi_region=True, logging=True,
              **{**events, "lambda_invoke_events": False})
    account = link([local, stopped, wide, *regions])[0].facts
    assert account["s3_object_write_events_trails"] == ["wide"] and account["s3_object_read_events_logged"] is True
    assert account["lambda_invoke_events_logged"] is False


def test_rds_engine_support_table() -> None:
    from cloudward.conformity.aws.collectors.rds import engine_ended

    assert engine_ended("postgres", "9.3.3") is True and engine_ended("postgres", "12.19") is True
    assert engine_ended("postgres", "16.4") is False and engine_ended("postgres", "13.15") is False
    assert engine_ended("mysql", "5.7.44") is True and engine_ended("mysql", "8.0.39") is False
    assert engine_ended("mariadb", "10.4.34") is True and engine_ended("mariadb", "10.11.9") is False
    assert engine_ended("oracle-ee", "19.0.0.0") is None and engine_ended("postgres", "") is None
