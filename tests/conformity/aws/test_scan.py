"""The AWS posture scan against a planted moto account: each detection claim has a failing case (the
weak account) and a passing case (the hardened account); rules moto cannot represent are proven on
hand-built resource records (test_records.py). Throttling and denied permissions come from a proxy in
front of moto; the CLI is driven end to end once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conformity.aws import accounts
from tests.conformity.aws.conftest import Proxy, run_scan, signing_service
from tests.conformity.aws.test_records import HAND_BUILT

# Rules the weak account triggers, TeamTNT-relevant first. Every aws rule is here or in HAND_BUILT.
TEAMTNT = [
    "aws.ec2.sg_world_ssh", "aws.ec2.sg_world_docker_api", "aws.ec2.sg_world_docker_tls", "aws.ec2.sg_world_etcd",
    "aws.ec2.sg_world_redis", "aws.ec2.sg_world_kubelet", "aws.ec2.sg_world_all_ports", "aws.ec2.sg_ipv6_admin_ports",
    "aws.ec2.instance_imdsv1", "aws.ec2.instance_admin_role", "aws.ec2.instance_imdsv1_admin_role",
    "aws.ec2.instance_public_imdsv1", "aws.ec2.instance_public_crew_ports", "aws.ec2.instance_metadata_hop_limit",
    "aws.iam.user_admin", "aws.iam.role_admin", "aws.iam.instance_profile_admin", "aws.iam.policy_admin",
    "aws.iam.user_console_no_mfa", "aws.s3.bucket_public", "aws.s3.bucket_public_write",
    "aws.cloudtrail.region_not_logged", "aws.cloudtrail.no_multi_region_trail", "aws.cloudtrail.trail_not_logging",
    "aws.guardduty.not_enabled", "aws.ecr.no_scan_on_push", "aws.eks.public_endpoint", "aws.eks.audit_logging_off",
    "aws.lambda.secret_env_names", "aws.ec2.sg_world_kubernetes_api", "aws.ec2.sg_world_weave_scope",
    "aws.ec2.sg_world_docker_alt", "aws.ec2.sg_world_jupyter",
]
OTHERS = [
    "aws.ec2.sg_world_rdp", "aws.ec2.sg_world_mongodb", "aws.ec2.sg_world_elasticsearch",
    "aws.ec2.sg_world_postgresql", "aws.ec2.sg_world_mysql", "aws.ec2.sg_world_mssql", "aws.ec2.sg_world_oracle",
    "aws.ec2.sg_world_memcached", "aws.ec2.sg_world_couchdb", "aws.ec2.sg_world_consul", "aws.ec2.sg_world_telnet",
    "aws.ec2.sg_world_smb", "aws.ec2.sg_world_ftp", "aws.ec2.sg_world_vnc", "aws.ec2.sg_world_kibana",
    "aws.ec2.sg_world_cassandra", "aws.ec2.sg_world_hadoop", "aws.ec2.sg_world_smtp", "aws.ec2.sg_world_wide_range",
    "aws.ec2.sg_default_allows_traffic", "aws.ec2.sg_unused", "aws.ec2.nacl_world_admin_ports",
    "aws.ec2.instance_without_role", "aws.ec2.instance_no_detailed_monitoring", "aws.ec2.volume_unencrypted",
    "aws.ec2.snapshot_public", "aws.ec2.snapshot_unencrypted", "aws.ec2.snapshot_shared",
    "aws.ec2.ebs_default_encryption_off", "aws.ec2.ami_public", "aws.ec2.vpc_flow_logs_off",
    "aws.ec2.default_vpc_in_use", "aws.iam.root_no_mfa", "aws.iam.policy_admin_unattached",
    "aws.iam.policy_privilege_escalation", "aws.iam.user_inline_escalation", "aws.iam.policy_service_wildcard",
    "aws.iam.access_key_never_used", "aws.iam.multiple_active_keys", "aws.iam.user_direct_policies",
    "aws.iam.role_trust_public", "aws.iam.role_cross_account_no_external_id", "aws.iam.password_min_length",
    "aws.iam.password_reuse", "aws.iam.password_no_symbols", "aws.iam.password_no_numbers",
    "aws.iam.password_no_uppercase", "aws.iam.password_no_lowercase", "aws.iam.password_no_expiry",
    "aws.iam.no_support_role", "aws.s3.bucket_latent_public", "aws.s3.bucket_public_access_block_off",
    "aws.s3.account_public_access_block_off", "aws.s3.bucket_no_tls_enforcement", "aws.s3.bucket_no_default_encryption",
    "aws.s3.bucket_no_versioning", "aws.s3.bucket_no_mfa_delete", "aws.s3.bucket_no_access_logging",
    "aws.s3.bucket_no_object_lock", "aws.cloudtrail.log_validation_off", "aws.cloudtrail.not_kms_encrypted",
    "aws.cloudtrail.no_cloudwatch_logs", "aws.cloudtrail.bucket_public", "aws.cloudtrail.bucket_no_access_logging",
    "aws.cloudtrail.partial_management_events", "aws.config.no_recorder", "aws.config.not_recording",
    "aws.config.partial_recording", "aws.kms.rotation_off", "aws.kms.policy_public", "aws.kms.pending_deletion",
    "aws.lambda.public_url", "aws.lambda.deprecated_runtime", "aws.lambda.policy_public", "aws.ecr.mutable_tags",
    "aws.ecr.policy_public", "aws.ecr.no_lifecycle_policy", "aws.ecr.not_kms_encrypted",
    "aws.eks.public_endpoint_restricted", "aws.eks.control_plane_logging_incomplete", "aws.eks.secrets_not_encrypted",
    "aws.rds.public", "aws.rds.unencrypted", "aws.rds.short_backups", "aws.rds.no_multi_az",
    "aws.rds.no_deletion_protection", "aws.rds.auto_minor_upgrade_off", "aws.rds.iam_auth_off",
    "aws.rds.snapshot_public", "aws.rds.snapshot_unencrypted",
    # answers to Prowler checks (benchmarks/conformity/prowler.py)
    "aws.ec2.sg_world_open", "aws.ec2.instance_public_world_ports", "aws.ec2.instance_public_with_profile",
    "aws.eks.private_endpoint_off", "aws.eks.unsupported_version", "aws.s3.bucket_not_kms_encrypted",
    "aws.lambda.env_not_cmk_encrypted", "aws.rds.copy_tags_off", "aws.rds.enhanced_monitoring_off",
    "aws.rds.no_log_exports", "aws.cloudtrail.no_s3_read_data_events", "aws.cloudtrail.no_s3_write_data_events",
    "aws.cloudtrail.no_lambda_data_events", "aws.rds.tls_not_required", "aws.rds.engine_version_unsupported",
    "aws.s3.bucket_acls_enabled", "aws.ec2.instance_public_ip", "aws.ec2.subnet_auto_public_ip",
    "aws.ecr.basic_scanning",
    # the rest of Prowler's failing checks: hygiene, resilience and organization set-up (mostly info/low)
    "aws.s3.bucket_no_lifecycle", "aws.s3.bucket_no_cross_region_replication", "aws.s3.bucket_no_event_notifications",
    "aws.lambda.not_in_vpc", "aws.lambda.no_dead_letter_queue", "aws.rds.default_port",
    "aws.rds.no_instance_event_subscription", "aws.rds.no_parameter_group_event_subscription",
    "aws.rds.no_security_group_event_subscription", "aws.iam.no_saml_provider", "aws.iam.no_security_audit_role",
    "aws.iam.user_virtual_mfa_only", "aws.iam.role_service_trust_no_source_condition",
    "aws.ec2.nacl_world_all_traffic", "aws.ec2.volume_no_snapshot", "aws.ec2.vpc_no_ec2_endpoint",
    "aws.ec2.vpc_subnets_not_separated", "aws.ec2.vpcs_single_region", "aws.cloudtrail.no_bedrock_logging",
    "aws.config.no_org_aggregator", "aws.guardduty.not_centrally_managed", "aws.guardduty.no_delegated_admin",
    # served by missing_apis.py (moto has no SSM managed instances nor Backup selections)
    "aws.backup.volume_not_protected", "aws.backup.rds_not_protected", "aws.ssm.instance_not_managed",
]
WEAK_FIRES = TEAMTNT + OTHERS
# The hardened account cannot pass these in moto: root MFA cannot be enabled, MFA delete is not kept
# and a function's dead-letter queue is dropped. Their passing cases are hand-built records (test_records.py).
MOTO_CANNOT_PASS = {"aws.iam.root_no_mfa", "aws.s3.bucket_no_mfa_delete", "aws.lambda.no_dead_letter_queue"}


def fired(result: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for finding in result.findings:
        out.setdefault(finding.rule_id, []).append(finding)
    return out


def test_every_aws_rule_is_proven_here_or_on_records():
    from cloudward.cli.common import load_all_rules

    ids = {r.id for r in load_all_rules() if r.engine_name == "aws"}
    assert len(ids) >= 100
    assert len(WEAK_FIRES) == len(set(WEAK_FIRES))
    assert not set(WEAK_FIRES) & set(HAND_BUILT)
    assert ids == set(WEAK_FIRES) | set(HAND_BUILT)


@pytest.mark.parametrize("rule_id", WEAK_FIRES)
def test_weak_account_fires(weak, rule_id):
    assert rule_id in fired(weak), f"{rule_id} did not fire on the weak account"


@pytest.mark.parametrize("rule_id", [r for r in WEAK_FIRES if r not in MOTO_CANNOT_PASS])
def test_hardened_account_passes(hardened, rule_id):
    assert rule_id not in fired(hardened), [f.target.name for f in fired(hardened).get(rule_id, [])]


def test_scans_complete_without_errors(weak, hardened):
    for result in (weak, hardened):
        assert result.status.value == "completed"
        assert result.errors == []
        assert result.stats["failed_units"] == []
    assert set(fired(hardened)) == MOTO_CANNOT_PASS


def test_both_regions_are_scanned_and_reported(weak):
    regions = {f.location["region"] for f in fired(weak)["aws.ec2.sg_world_redis"]}
    assert regions == set(accounts.REGIONS)
    not_logged = {f.location["region"] for f in fired(weak)["aws.cloudtrail.region_not_logged"]}
    assert not_logged == set(accounts.REGIONS)
    # GuardDuty exists but is disabled in the second region: still "not enabled" in both
    assert {f.location["region"] for f in fired(weak)["aws.guardduty.not_enabled"]} == set(accounts.REGIONS)
    # Config: no recorder at home, a stopped partial one in the second region
    assert [f.location["region"] for f in fired(weak)["aws.config.no_recorder"]] == [accounts.HOME]
    assert [f.location["region"] for f in fired(weak)["aws.config.not_recording"]] == [accounts.REGIONS[1]]


def test_instance_with_admin_role_says_what_stolen_metadata_reaches(weak):
    findings = fired(weak)["aws.ec2.instance_imdsv1_admin_role"]
    assert len(findings) == 2  # one per region: the instance with the admin profile, not the other one
    for finding in findings:
        assert finding.target.kind == "resource"
        assert finding.target.name.startswith(f"arn:aws:ec2:{finding.location['region']}:{accounts.WEAK}:instance/i-")
        assert finding.evidence["http_tokens"] == "optional"
        assert finding.evidence["role_names"] == ["app-admin"]
        assert finding.evidence["role_admin_via"] == ["role:app-admin:inline:p"]


def test_security_group_evidence_names_ranges_and_sources(weak):
    finding = next(f for f in fired(weak)["aws.ec2.sg_world_docker_api"] if f.evidence["name"] == "weak-open")
    assert "tcp:2375-2375 from 0.0.0.0/0" in finding.evidence["world_open_ranges"]
    assert "tcp:22-22 from ::/0" in finding.evidence["world_open_ranges"]
    assert "docker" in finding.evidence["world_open_services"]
    wide = fired(weak)["aws.ec2.sg_world_wide_range"]
    assert {f.evidence["name"] for f in wide} == {"weak-wide"}  # not the all-ports group


def test_admin_equivalence_through_groups_and_inline_policies(weak):
    users = {f.target.name.rsplit("/", 1)[-1]: f.evidence["admin_via"] for f in fired(weak)["aws.iam.user_admin"]}
    assert users == {"admin-bob": ["attached:AdministratorAccess"], "ci-deployer": ["group:admins:attached:full-admin"]}


def test_reports_never_carry_secret_values(weak):
    text = json.dumps(weak.contract("test"))
    assert accounts.SECRET_VALUE not in text
    assert "Sup3r-secret-pass!" not in text
    finding = fired(weak)["aws.lambda.secret_env_names"][0]
    assert finding.evidence == {"secret_env_names": ["DB_PASSWORD"]}
    keys = fired(weak)["aws.iam.multiple_active_keys"][0].evidence["access_keys"]
    assert all(k["id"].startswith("…") and len(k["id"]) == 5 for k in keys)


def test_fingerprints_are_stable_across_scans(moto_endpoint, weak):
    again = run_scan(moto_endpoint, accounts.WEAK, services=["ec2", "iam"])  # instances need IAM to be linked
    before = {f.fingerprint for f in weak.findings if f.location["service"] in ("ec2", "iam")}
    assert {f.fingerprint for f in again.findings} == before


def test_throttled_calls_are_retried_and_the_scan_completes(moto_endpoint, weak):
    throttled = {"ec2": 0, "kms": 0}
    limit = 2

    def decide(method: str, path: str, headers: dict[str, str], body: bytes):
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        if b"Action=DescribeSecurityGroups" in body and throttled["ec2"] < limit:
            throttled["ec2"] += 1
            return 400, {"Content-Type": "text/xml"}, (
                b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
                b"</Message></Error></Errors><RequestID>x</RequestID></Response>")
        if target == "TrentService.ListKeys" and throttled["kms"] < limit:
            throttled["kms"] += 1
            return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(
                {"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        return None

    with Proxy(moto_endpoint, decide) as proxy:
        result = run_scan(proxy.url, accounts.WEAK, regions=(accounts.HOME,), services=["ec2", "kms", "iam"])
    assert throttled == {"ec2": limit, "kms": limit}
    assert result.errors == [] and result.status.value == "completed"

    def home(findings: list[Any]) -> set[str]:  # VPC spread across regions is judged only on 2+ regions
        return {f.fingerprint for f in findings if f.location["region"] in (accounts.HOME, "global")
                and f.location["service"] in ("ec2", "kms", "iam") and f.rule_id != "aws.ec2.vpcs_single_region"}

    assert home(result.findings) == home(weak.findings)


def test_a_denied_service_is_an_error_naming_the_permission_and_others_are_kept(moto_endpoint):
    def decide(method: str, path: str, headers: dict[str, str], body: bytes):
        if signing_service(headers) == "guardduty":
            message = ("User: arn:aws:sts::111111111111:assumed-role/audit/x is not authorized to perform: "
                       "guardduty:ListDetectors")
            return 403, {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException"}, json.dumps(
                {"__type": "AccessDeniedException", "message": message}).encode()
        return None

    with Proxy(moto_endpoint, decide) as proxy:
        result = run_scan(proxy.url, accounts.WEAK, services=["guardduty", "ec2", "iam"])
    assert result.status.value == "completed"
    assert sorted(result.stats["failed_units"]) == ["guardduty/eu-west-1", "guardduty/us-east-1"]
    messages = [e.message for e in result.errors]
    assert len(messages) == 2
    for region in accounts.REGIONS:
        assert any(m.startswith(f"guardduty in {region}: AccessDeniedException on ListDetectors "
                                f"(needs guardduty:ListDetectors)") for m in messages), messages
    rules = {f.rule_id for f in result.findings}
    assert "aws.ec2.sg_world_redis" in rules and "aws.iam.user_admin" in rules
    assert not any(r.startswith("aws.guardduty.") for r in rules)


def test_a_malformed_answer_is_an_error_naming_the_service(moto_endpoint):
    def decide(method: str, path: str, headers: dict[str, str], body: bytes):
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        if target.endswith("DescribeRepositories"):
            return 200, {"Content-Type": "application/x-amz-json-1.1"}, b'{"repositories": "not a list"}'
        return None

    with Proxy(moto_endpoint, decide) as proxy:
        result = run_scan(proxy.url, accounts.WEAK, regions=(accounts.HOME,), services=["ecr", "kms"])
    assert [e.message.split(":")[0] for e in result.errors] == ["ecr in us-east-1"]
    assert "DescribeRepositories" in result.errors[0].message
    assert {f.location["service"] for f in result.findings} == {"kms"}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "cloudward"), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


@pytest.fixture
def cli_env(moto_endpoint: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDWARD_")}
    env.update(CLOUDWARD_DATA_DIR=str(tmp_path / "data"), AWS_ENDPOINT_URL=moto_endpoint)
    return env


def test_cli_scan_json_store_and_cis_report(cli_env, tmp_path):
    weak_role = f"arn:aws:iam::{accounts.WEAK}:role/audit"
    proc = _cli(["conformity", "scan", "aws", "--assume-role", weak_role, "--regions", ",".join(accounts.REGIONS),
                 "--format", "json", "--fail-on", "critical"], cli_env)
    assert proc.returncode == 1, proc.stderr  # critical findings and --fail-on critical
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "cloudward/v1" and doc["scan"]["kind"] == "conformity-aws"
    assert doc["scan"]["stats"]["account"] == accounts.WEAK
    rules = {f["rule_id"] for f in doc["findings"]}
    assert {"aws.ec2.sg_world_docker_api", "aws.ec2.instance_imdsv1", "aws.iam.root_no_mfa"} <= rules
    assert "conformity aws: account 111111111111, 2 region(s), 14 service(s)" in proc.stderr
    report_file = tmp_path / "weak.json"
    report_file.write_text(proc.stdout)

    report = _cli(["conformity", "report", "--framework", "cis-aws", "--format", "json"], cli_env)
    assert report.returncode == 0, report.stderr
    controls = {c["id"]: c for c in json.loads(report.stdout)["controls"]}
    assert controls["5.2"]["status"] == "fail"
    assert "aws.ec2.sg_world_ssh" in controls["5.2"]["failing_rules"]
    assert controls["5.6"]["status"] == "fail"
    assert controls["1.4"]["status"] == "pass"  # moto's root has no access keys
    assert controls["1.1"]["status"] == "not scored"
    from_file = _cli(["conformity", "report", "--framework", "cis-aws", "--input", str(report_file),
                      "--format", "json"], cli_env)
    assert json.loads(from_file.stdout)["controls"] == json.loads(report.stdout)["controls"]

    hardened_role = f"arn:aws:iam::{accounts.HARDENED}:role/audit"
    proc = _cli(["conformity", "scan", "aws", "--assume-role", hardened_role, "--regions", "all",
                 "--services", "ec2,cloudtrail", "--format", "json", "--fail-on", "critical"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["scan"]["stats"]["regions"]) > 10  # every enabled region
    table = _cli(["conformity", "report", "--framework", "cis-aws", "--format", "table"], cli_env)
    controls = {c["id"]: c["status"] for c in json.loads(
        _cli(["conformity", "report", "--format", "json"], cli_env).stdout)["controls"]}
    assert controls["5.2"] == "pass" and controls["3.1"] == "pass"
    assert controls["1.4"] == "not checked"  # IAM was not scanned this time
    assert "5.2" in table.stdout and table.returncode == 0


def test_cli_usage_errors(cli_env):
    proc = _cli(["conformity", "scan", "aws", "--services", "ec2,warpdrive", "--format", "json"], cli_env)
    assert proc.returncode == 2 and "warpdrive" in proc.stderr
    proc = _cli(["conformity", "scan", "aws", "--assume-role", "not-an-arn", "--format", "json"], cli_env)
    assert proc.returncode == 2 and "not a role ARN" in proc.stderr
    proc = _cli(["conformity", "report", "--framework", "nope"], cli_env)
    assert proc.returncode == 2 and "unknown framework" in proc.stderr


def test_a_fix_closes_the_finding_in_the_store(moto_endpoint, tmp_path):
    from tests.conformity.aws.accounts import EMPTY, Clients

    from cloudward.store import Store

    ec2 = Clients(moto_endpoint, EMPTY)("ec2")
    sg = ec2.create_security_group(GroupName="redis", Description="redis")["GroupId"]
    perm = [{"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=perm)
    with Store.open(f"sqlite:///{tmp_path}/store.db") as store:
        first = run_scan(moto_endpoint, EMPTY, regions=(accounts.HOME,), services=["ec2", "iam"])
        store.record_scan(first)
        redis = next(f for f in first.findings if f.rule_id == "aws.ec2.sg_world_redis")
        ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=perm)
        second = run_scan(moto_endpoint, EMPTY, regions=(accounts.HOME,), services=["ec2"])
        summary = store.record_scan(second)
        assert store.get_finding(redis.fingerprint).status == "fixed"
        # only the fixed group (redis and "some port open"): IAM was not scanned, so its findings stay open
        assert summary.fixed == 2
        policy = next(f for f in first.findings if f.rule_id == "aws.iam.password_policy_missing")
        assert store.get_finding(policy.fingerprint).status == "open"
