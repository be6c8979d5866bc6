"""The AWS account posture scan against Prowler, on the same planted account in the same moto server.

A moto server (`.venv/bin/moto_server -H 127.0.0.1 -p PORT`) is started and the deliberately weak
account of tests/conformity/aws/accounts.py is planted in it (the same code the tests use). Then, in
the same run and on the same account, alternately, N times each:

    cloudward  .venv/bin/cloudward conformity scan aws --endpoint-url URL --assume-role <weak>/audit
               --regions us-east-1,eu-west-1 --format json --no-store
    prowler    .venv-prowler/bin/prowler aws --role <weak>/audit --region us-east-1 eu-west-1
               --service <the services both check> -M json-ocsf  (AWS_ENDPOINT_URL = moto)

moto 5.2.5 (the newest release) serves neither SSM DescribeInstanceInformation nor AWS Backup
ListBackupSelections, so cloudward talks to moto through tests/conformity/aws/missing_apis.py, a loopback
proxy that answers those two from what the weak account planted (no agent, no plan) and forwards the
rest. Prowler talks to moto directly (a proxy would only slow it down, flattering the ratio); without a
backup plan or SSM data it reaches the same FAIL verdicts.

Network: by default the whole benchmark re-runs itself in a fresh network namespace (`unshare -rn`,
then `ip link set lo up`) where only loopback exists, so neither tool (nor moto) can reach anything
beyond 127.0.0.1 — Prowler's version check and any other call out fail at once instead of leaking.
`--no-netns` skips that (Prowler 5.x only calls out for `--version`, Shodan, Slack, Jira or S3 output,
none of which is used here).

Results: wall clock (median of N), the ratio, a coverage table of every planted misconfiguration
(the TeamTNT ones first; which tool found it, through a hand-written Prowler-check -> cloudward-rule
mapping, each pair a deliberate choice) and the Prowler FAIL checks that no cloudward rule answers.
Written to the `conformity-aws` section of docs/BENCHMARKS.md.

    benchmarks/conformity/setup-prowler              (once: Prowler 5.x in .venv-prowler)
    .venv/bin/python benchmarks/conformity/prowler.py [--runs 3] [--no-write] [--no-netns]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, measure, today, write_section

sys.path.insert(0, str(ROOT))
from tests.conformity.aws import accounts
from tests.conformity.aws.missing_apis import MotoPlus
from tests.harness.services import start_process

PROWLER = ROOT / ".venv-prowler" / "bin" / "prowler"
CLOUDWARD = ROOT / ".venv" / "bin" / "cloudward"
MOTO = ROOT / ".venv" / "bin" / "moto_server"
MOTO_ENV = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
ROLE = f"arn:aws:iam::{accounts.WEAK}:role/audit"
# cloudward's services and Prowler's names for the same: Prowler splits VPC (flow logs, subnets)
# out of EC2, where cloudward's ec2 collector reads them, so `vpc` is included on its side.
CLOUDWARD_SERVICES = ("ec2", "iam", "s3", "cloudtrail", "guardduty", "config", "kms", "lambda", "ecr", "eks", "rds",
                      "organizations", "backup", "ssm")
PROWLER_SERVICES = ("ec2", "vpc", "iam", "s3", "cloudtrail", "guardduty", "config", "kms", "awslambda", "ecr", "eks",
                    "rds")
SECTION = "conformity-aws"
NETNS_FLAG = "CLOUDWARD_BENCH_NETNS"

# --- Prowler check -> the cloudward rules that answer the same question ------------------------------
# Each pair is a deliberate choice: the cloudward rule fires on the same resource for the same reason
# (or for a stricter one that includes it). Prowler checks not listed here have no cloudward answer and
# are reported as gaps when they FAIL on the weak account.
MAPPING: dict[str, tuple[str, ...]] = {
    # EC2 / VPC: security groups
    "ec2_securitygroup_allow_ingress_from_internet_to_all_ports": ("aws.ec2.sg_world_all_ports",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_22": ("aws.ec2.sg_world_ssh",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_3389": ("aws.ec2.sg_world_rdp",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_redis_6379": ("aws.ec2.sg_world_redis",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_mongodb_27017_27018": ("aws.ec2.sg_world_mongodb",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_mysql_3306": ("aws.ec2.sg_world_mysql",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_postgres_5432": ("aws.ec2.sg_world_postgresql",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_sql_server_1433_1434": ("aws.ec2.sg_world_mssql",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_oracle_1521_2483": ("aws.ec2.sg_world_oracle",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_memcached_11211": ("aws.ec2.sg_world_memcached",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_telnet_23": ("aws.ec2.sg_world_telnet",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_ftp_20_21": ("aws.ec2.sg_world_ftp",),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_elasticsearch_kibana_9200_9300_5601": (
        "aws.ec2.sg_world_elasticsearch", "aws.ec2.sg_world_kibana"),
    # Prowler's Cassandra check is 7199/9160/8888; cloudward names 9042 (Cassandra) and 8888 (Jupyter)
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_cassandra_7199_9160_8888": (
        "aws.ec2.sg_world_cassandra", "aws.ec2.sg_world_jupyter"),
    "ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_kafka_9092": (),
    # Prowler's configurable "high risk" list (25, 110, 135, 143, 445, 3000, 4333, 5000, 5500, 8080, 8088):
    # cloudward names 25 and 135/139/445; 110, 143, 3000, 5000, 8080... are only in the generic rules
    "ec2_securitygroup_allow_ingress_from_internet_to_high_risk_tcp_ports": ("aws.ec2.sg_world_smtp",
                                                                              "aws.ec2.sg_world_smb"),
    "ec2_securitygroup_allow_ingress_from_internet_to_any_port": ("aws.ec2.sg_world_open",),
    "ec2_securitygroup_default_restrict_traffic": ("aws.ec2.sg_default_allows_traffic",),
    "ec2_securitygroup_not_used": ("aws.ec2.sg_unused",),
    "ec2_networkacl_allow_ingress_tcp_port_22": ("aws.ec2.nacl_world_admin_ports",),
    "ec2_networkacl_allow_ingress_tcp_port_3389": ("aws.ec2.nacl_world_admin_ports",),
    # EC2: instances (Prowler's per-port instance checks <- cloudward's linked instance facts)
    "ec2_instance_imdsv2_enabled": ("aws.ec2.instance_imdsv1",),
    "ec2_instance_detailed_monitoring_enabled": ("aws.ec2.instance_no_detailed_monitoring",),
    "ec2_instance_profile_attached": ("aws.ec2.instance_without_role",),
    "ec2_instance_internet_facing_with_instance_profile": ("aws.ec2.instance_public_with_profile",),
    **{f"ec2_instance_port_{name}_exposed_to_internet": ("aws.ec2.instance_public_world_ports",
                                                         "aws.ec2.instance_public_crew_ports")
       for name in ("ssh", "rdp", "redis", "mongodb", "mysql", "postgresql", "sqlserver", "oracle", "memcached",
                    "telnet", "ftp", "cassandra", "cifs", "elasticsearch_kibana", "kafka", "kerberos", "ldap")},
    # EC2: EBS, AMIs, snapshots
    "ec2_ami_public": ("aws.ec2.ami_public",),
    "ec2_ebs_default_encryption": ("aws.ec2.ebs_default_encryption_off",),
    "ec2_ebs_public_snapshot": ("aws.ec2.snapshot_public",),
    "ec2_ebs_snapshots_encrypted": ("aws.ec2.snapshot_unencrypted",),
    "ec2_ebs_volume_encryption": ("aws.ec2.volume_unencrypted",),
    "vpc_flow_logs_enabled": ("aws.ec2.vpc_flow_logs_off",),
    "vpc_subnet_no_public_ip_by_default": ("aws.ec2.subnet_auto_public_ip",),
    "ec2_instance_public_ip": ("aws.ec2.instance_public_ip",),
    # IAM
    "iam_root_mfa_enabled": ("aws.iam.root_no_mfa",),
    "iam_root_hardware_mfa_enabled": ("aws.iam.root_no_hardware_mfa", "aws.iam.root_no_mfa"),
    "iam_no_root_access_key": ("aws.iam.root_access_keys",),
    "iam_avoid_root_usage": ("aws.iam.root_recently_used",),
    "iam_user_mfa_enabled_console_access": ("aws.iam.user_console_no_mfa",),
    "iam_user_administrator_access_policy": ("aws.iam.user_admin",),
    "iam_role_administratoraccess_policy": ("aws.iam.role_admin",),
    "iam_group_administrator_access_policy": ("aws.iam.user_admin", "aws.iam.policy_admin"),
    # AWS-managed AdministratorAccess attached anywhere: cloudward names the principal holding it
    "iam_aws_attached_policy_no_administrative_privileges": ("aws.iam.user_admin", "aws.iam.role_admin"),
    "iam_customer_attached_policy_no_administrative_privileges": ("aws.iam.policy_admin",),
    "iam_customer_unattached_policy_no_administrative_privileges": ("aws.iam.policy_admin_unattached",),
    "iam_inline_policy_no_administrative_privileges": ("aws.iam.role_admin", "aws.iam.user_admin"),
    # `cloudtrail:*` / `kms:*` / marketplace / sts:AssumeRole on `*` fire here on a `*:*` policy: cloudward
    # reports that policy (or the role holding it inline) as admin-equivalent, which includes them
    "iam_policy_no_full_access_to_cloudtrail": ("aws.iam.policy_admin", "aws.iam.policy_service_wildcard"),
    "iam_policy_no_full_access_to_kms": ("aws.iam.policy_admin", "aws.iam.policy_service_wildcard"),
    "iam_inline_policy_no_full_access_to_cloudtrail": ("aws.iam.role_admin", "aws.iam.user_admin"),
    "iam_inline_policy_no_full_access_to_kms": ("aws.iam.role_admin", "aws.iam.user_admin"),
    "iam_policy_no_wildcard_marketplace_subscribe": ("aws.iam.policy_admin",),
    "iam_inline_policy_no_wildcard_marketplace_subscribe": ("aws.iam.role_admin", "aws.iam.user_admin"),
    "iam_no_custom_policy_permissive_role_assumption": ("aws.iam.policy_admin", "aws.iam.policy_privilege_escalation"),
    "iam_policy_allows_privilege_escalation": ("aws.iam.policy_privilege_escalation",
                                               "aws.iam.user_inline_escalation"),
    "iam_policy_attached_only_to_group_or_roles": ("aws.iam.user_direct_policies",),
    "iam_user_two_active_access_key": ("aws.iam.multiple_active_keys",),
    "iam_user_no_setup_initial_access_key": ("aws.iam.access_key_never_used",),
    "iam_rotate_access_key_90_days": ("aws.iam.access_key_old",),
    "iam_user_accesskey_unused": ("aws.iam.access_key_unused",),
    "iam_user_console_access_unused": ("aws.iam.console_unused",),
    "iam_support_role_created": ("aws.iam.no_support_role",),
    "iam_role_cross_account_readonlyaccess_policy": ("aws.iam.role_cross_account_no_external_id",),
    "iam_password_policy_minimum_length_14": ("aws.iam.password_min_length",),
    "iam_password_policy_lowercase": ("aws.iam.password_no_lowercase",),
    "iam_password_policy_uppercase": ("aws.iam.password_no_uppercase",),
    "iam_password_policy_number": ("aws.iam.password_no_numbers",),
    "iam_password_policy_symbol": ("aws.iam.password_no_symbols",),
    "iam_password_policy_reuse_24": ("aws.iam.password_reuse",),
    "iam_password_policy_expires_passwords_within_90_days_or_less": ("aws.iam.password_no_expiry",),
    # S3
    "s3_bucket_public_access": ("aws.s3.bucket_public",),
    "s3_bucket_public_list_acl": ("aws.s3.bucket_public",),
    "s3_bucket_public_write_acl": ("aws.s3.bucket_public_write",),
    "s3_bucket_policy_public_write_access": ("aws.s3.bucket_public_write", "aws.s3.bucket_public"),
    # "cross account": a policy granting `*` (the weak buckets' public policies) — cloudward calls them
    # public, or latent-public when a block holds them back
    "s3_bucket_cross_account_access": ("aws.s3.bucket_public", "aws.s3.bucket_latent_public"),
    "s3_bucket_level_public_access_block": ("aws.s3.bucket_public_access_block_off",),
    "s3_account_level_public_access_blocks": ("aws.s3.account_public_access_block_off",),
    "s3_bucket_default_encryption": ("aws.s3.bucket_no_default_encryption",),
    "s3_bucket_kms_encryption": ("aws.s3.bucket_not_kms_encrypted",),
    "s3_bucket_secure_transport_policy": ("aws.s3.bucket_no_tls_enforcement",),
    "s3_bucket_server_access_logging_enabled": ("aws.s3.bucket_no_access_logging",),
    "s3_bucket_object_versioning": ("aws.s3.bucket_no_versioning",),
    "s3_bucket_no_mfa_delete": ("aws.s3.bucket_no_mfa_delete",),
    "s3_bucket_object_lock": ("aws.s3.bucket_no_object_lock",),
    "s3_bucket_acl_prohibited": ("aws.s3.bucket_acls_enabled",),
    # CloudTrail
    "cloudtrail_multi_region_enabled": ("aws.cloudtrail.no_multi_region_trail", "aws.cloudtrail.region_not_logged",
                                        "aws.cloudtrail.trail_not_logging"),
    "cloudtrail_multi_region_enabled_logging_management_events": ("aws.cloudtrail.no_multi_region_trail",
                                                                  "aws.cloudtrail.partial_management_events"),
    "cloudtrail_cloudwatch_logging_enabled": ("aws.cloudtrail.no_cloudwatch_logs",),
    "cloudtrail_kms_encryption_enabled": ("aws.cloudtrail.not_kms_encrypted",),
    "cloudtrail_log_file_validation_enabled": ("aws.cloudtrail.log_validation_off",),
    "cloudtrail_logs_s3_bucket_access_logging_enabled": ("aws.cloudtrail.bucket_no_access_logging",),
    "cloudtrail_logs_s3_bucket_is_not_publicly_accessible": ("aws.cloudtrail.bucket_public",),
    "cloudtrail_s3_dataevents_read_enabled": ("aws.cloudtrail.no_s3_read_data_events",),
    "cloudtrail_s3_dataevents_write_enabled": ("aws.cloudtrail.no_s3_write_data_events",),
    # Prowler names each function no trail records; cloudward says once that no multi-region trail
    # records Lambda invocations (a selector for some functions only is not counted)
    "awslambda_function_invoke_api_operations_cloudtrail_logging_enabled": ("aws.cloudtrail.no_lambda_data_events",),
    # Config, GuardDuty
    "config_recorder_all_regions_enabled": ("aws.config.no_recorder", "aws.config.not_recording",
                                            "aws.config.partial_recording"),
    "guardduty_is_enabled": ("aws.guardduty.not_enabled",),
    # KMS
    "kms_cmk_rotation_enabled": ("aws.kms.rotation_off",),
    "kms_key_not_publicly_accessible": ("aws.kms.policy_public",),
    "kms_cmk_not_deleted_unintentionally": ("aws.kms.pending_deletion",),
    # Lambda
    "awslambda_function_url_public": ("aws.lambda.public_url",),
    "awslambda_function_not_publicly_accessible": ("aws.lambda.policy_public",),
    "awslambda_function_no_secrets_in_variables": ("aws.lambda.secret_env_names",),
    "awslambda_function_using_supported_runtimes": ("aws.lambda.deprecated_runtime",),
    "awslambda_function_env_vars_not_encrypted_with_cmk": ("aws.lambda.env_not_cmk_encrypted",),
    # ECR: Prowler's registry-level scan check fires on the registry; cloudward judges each repository
    # with the registry rule folded in, so the repository rule answers both
    "ecr_repositories_scan_images_on_push_enabled": ("aws.ecr.no_scan_on_push",),
    "ecr_registry_scan_images_on_push_enabled": ("aws.ecr.no_scan_on_push",),
    "ecr_repositories_not_publicly_accessible": ("aws.ecr.policy_public",),
    "ecr_repositories_tag_immutability": ("aws.ecr.mutable_tags",),
    "ecr_repositories_lifecycle_policy_enabled": ("aws.ecr.no_lifecycle_policy",),
    "ecr_registry_enhanced_scanning_enabled": ("aws.ecr.basic_scanning",),
    # EKS
    "eks_cluster_not_publicly_accessible": ("aws.eks.public_endpoint",),
    "eks_control_plane_logging_all_types_enabled": ("aws.eks.control_plane_logging_incomplete",),
    "eks_cluster_kms_cmk_encryption_in_secrets_enabled": ("aws.eks.secrets_not_encrypted",),
    "eks_cluster_private_nodes_enabled": ("aws.eks.private_endpoint_off",),
    "eks_cluster_uses_a_supported_version": ("aws.eks.unsupported_version",),
    # RDS
    "rds_instance_no_public_access": ("aws.rds.public",),
    "rds_instance_storage_encrypted": ("aws.rds.unencrypted",),
    "rds_instance_backup_enabled": ("aws.rds.short_backups",),
    "rds_instance_minor_version_upgrade_enabled": ("aws.rds.auto_minor_upgrade_off",),
    "rds_instance_multi_az": ("aws.rds.no_multi_az",),
    "rds_instance_deletion_protection": ("aws.rds.no_deletion_protection",),
    "rds_instance_iam_authentication_enabled": ("aws.rds.iam_auth_off",),
    "rds_snapshots_public_access": ("aws.rds.snapshot_public",),
    "rds_snapshots_encrypted": ("aws.rds.snapshot_unencrypted",),
    "rds_instance_copy_tags_to_snapshots": ("aws.rds.copy_tags_off",),
    "rds_instance_enhanced_monitoring_enabled": ("aws.rds.enhanced_monitoring_off",),
    "rds_instance_integration_cloudwatch_logs": ("aws.rds.no_log_exports",),
    "rds_instance_transport_encrypted": ("aws.rds.tls_not_required",),
    # Prowler asks RDS which versions it still lists; cloudward keeps the end-of-standard-support table
    "rds_instance_deprecated_engine_version": ("aws.rds.engine_version_unsupported",),
    # hygiene, resilience and organization set-up: mostly info/low in cloudward, each rule saying so
    "awslambda_function_inside_vpc": ("aws.lambda.not_in_vpc",),
    "awslambda_function_no_dead_letter_queue": ("aws.lambda.no_dead_letter_queue",),
    "cloudtrail_bedrock_logging_enabled": ("aws.cloudtrail.no_bedrock_logging",),
    "config_delegated_admin_and_org_aggregator_all_regions": ("aws.config.no_org_aggregator",),
    "guardduty_centrally_managed": ("aws.guardduty.not_centrally_managed",),
    "guardduty_delegated_admin_enabled_all_regions": ("aws.guardduty.no_delegated_admin",),
    # Prowler fails every account without SAML; cloudward only one whose people sign in as IAM users
    "iam_check_saml_providers_sts": ("aws.iam.no_saml_provider",),
    "iam_securityaudit_role_created": ("aws.iam.no_security_audit_role",),
    # Prowler fails users with no MFA (any user) or a virtual one; cloudward: console users without MFA,
    # and console users whose only MFA is virtual
    "iam_user_hardware_mfa_enabled": ("aws.iam.user_virtual_mfa_only", "aws.iam.user_console_no_mfa"),
    "iam_role_cross_service_confused_deputy_prevention": ("aws.iam.role_service_trust_no_source_condition",),
    "ec2_networkacl_allow_ingress_any_port": ("aws.ec2.nacl_world_all_traffic",),
    "ec2_ebs_volume_snapshots_exists": ("aws.ec2.volume_no_snapshot",),
    "rds_instance_non_default_port": ("aws.rds.default_port",),
    "rds_instance_critical_event_subscription": ("aws.rds.no_instance_event_subscription",),
    "rds_instance_event_subscription_parameter_groups": ("aws.rds.no_parameter_group_event_subscription",),
    "rds_instance_event_subscription_security_groups": ("aws.rds.no_security_group_event_subscription",),
    "s3_bucket_cross_region_replication": ("aws.s3.bucket_no_cross_region_replication",),
    "s3_bucket_event_notifications_enabled": ("aws.s3.bucket_no_event_notifications",),
    "s3_bucket_lifecycle_enabled": ("aws.s3.bucket_no_lifecycle",),
    "vpc_different_regions": ("aws.ec2.vpcs_single_region",),
    "vpc_endpoint_for_ec2_enabled": ("aws.ec2.vpc_no_ec2_endpoint",),
    "vpc_subnet_separate_private_public": ("aws.ec2.vpc_subnets_not_separated",),
    # AWS Backup and Systems Manager (served to cloudward by tests/conformity/aws/missing_apis.py: moto has
    # no ListBackupSelections nor DescribeInstanceInformation; the weak account has no plan and no agent)
    "ec2_ebs_volume_protected_by_backup_plan": ("aws.backup.volume_not_protected",),
    "rds_instance_protected_by_backup_plan": ("aws.backup.rds_not_protected",),
    "ec2_instance_managed_by_ssm": ("aws.ssm.instance_not_managed",),
}

# --- Prowler checks with no cloudward rule, and why (shown in the gap list) ---------------------------
DECLINED: dict[str, str] = {
    # moto artifacts: nothing is wrong in the planted account
    "eks_cluster_network_policy_enabled": "moto artifact: moto returns no cluster security group, which real EKS "
                                          "always creates (the check says nothing about Kubernetes network "
                                          "policies)",
    "rds_instance_inside_vpc": "moto artifact: moto's instance has no subnet group; every RDS instance has been in "
                               "a VPC since EC2-Classic was retired",
    "rds_instance_certificate_expiration": "moto artifact: moto has no CA certificate for the instance, which "
                                           "Prowler reports as expired",
}


@dataclass(frozen=True)
class Plant:
    """One misconfiguration planted in the weak account, how each tool would name it, and where."""

    what: str
    rules: tuple[str, ...]  # cloudward rules that report it
    checks: tuple[str, ...]  # Prowler checks that report it by name
    generic: tuple[str, ...] = ()  # Prowler checks that flag the resource without naming this problem
    resource: str = ""  # a substring of the resource both tools must name ("" = any)
    teamtnt: bool = False
    note: str = ""
    plantable: bool = True  # False: moto cannot show it; rule fixtures prove it instead


SG_ANY = ("ec2_securitygroup_allow_ingress_from_internet_to_any_port",
          "ec2_securitygroup_allow_ingress_from_internet_to_all_ports")
PLANTS: tuple[Plant, ...] = (
    Plant("SG open to the world on 22 (SSH)", ("aws.ec2.sg_world_ssh",),
          ("ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_22",), SG_ANY, teamtnt=True),
    Plant("SG open to the world on 2375 (Docker API)", ("aws.ec2.sg_world_docker_api",), (), SG_ANY, teamtnt=True),
    Plant("SG open to the world on 2376 (Docker TLS)", ("aws.ec2.sg_world_docker_tls",), (), SG_ANY, teamtnt=True),
    Plant("SG open to the world on 2379 (etcd)", ("aws.ec2.sg_world_etcd",), (), SG_ANY, teamtnt=True),
    Plant("SG open to the world on 6379 (Redis)", ("aws.ec2.sg_world_redis",),
          ("ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_redis_6379",), SG_ANY, teamtnt=True),
    Plant("SG open to the world on 10250 (kubelet)", ("aws.ec2.sg_world_kubelet",), (), SG_ANY, teamtnt=True),
    Plant("Instance allows IMDSv1", ("aws.ec2.instance_imdsv1",), ("ec2_instance_imdsv2_enabled",), teamtnt=True),
    Plant("IMDSv1 instance holding an admin role", ("aws.ec2.instance_imdsv1_admin_role",), (),
          ("ec2_instance_imdsv2_enabled", "ec2_instance_internet_facing_with_instance_profile"), teamtnt=True),
    Plant("Admin-equivalent user (AdministratorAccess)", ("aws.iam.user_admin",),
          ("iam_user_administrator_access_policy",), resource="admin-bob", teamtnt=True),
    Plant("Admin-equivalent user via a group's `*:*` policy", ("aws.iam.user_admin",), (),
          ("iam_customer_attached_policy_no_administrative_privileges",), resource="ci-deployer", teamtnt=True),
    Plant("Admin-equivalent role (inline `*:*`)", ("aws.iam.role_admin",),
          ("iam_inline_policy_no_administrative_privileges",), resource="app-admin", teamtnt=True),
    Plant("Admin-equivalent instance profile", ("aws.iam.instance_profile_admin", "aws.ec2.instance_admin_role"), (),
          ("ec2_instance_internet_facing_with_instance_profile",), teamtnt=True),
    Plant("Internet-facing instance on Docker/etcd/Redis/kubelet ports", ("aws.ec2.instance_public_crew_ports",),
          (), ("ec2_instance_port_redis_exposed_to_internet",), teamtnt=True),
    Plant("Root account without MFA", ("aws.iam.root_no_mfa",), ("iam_root_mfa_enabled",), teamtnt=True,
          note="Prowler ran no root check against moto's credential report"),
    Plant("Root access keys", ("aws.iam.root_access_keys",), ("iam_no_root_access_key",), teamtnt=True,
          note="moto never reports root keys: proven by rule fixtures instead", plantable=False),
    Plant("Access keys never used", ("aws.iam.access_key_never_used",), ("iam_user_no_setup_initial_access_key",),
          resource="admin-bob", teamtnt=True),
    Plant("Access keys older than 90 days", ("aws.iam.access_key_old",), ("iam_rotate_access_key_90_days",),
          teamtnt=True, note="moto dates keys now: proven by rule fixtures instead", plantable=False),
    Plant("Two active access keys", ("aws.iam.multiple_active_keys",), ("iam_user_two_active_access_key",),
          resource="admin-bob", teamtnt=True),
    Plant("Console user without MFA", ("aws.iam.user_console_no_mfa",), ("iam_user_mfa_enabled_console_access",),
          resource="admin-bob", teamtnt=True),
    Plant("Public bucket (ACL read+write, policy `*`)", ("aws.s3.bucket_public",), ("s3_bucket_public_access",),
          resource="weak-public-data", teamtnt=True),
    Plant("Public-write bucket ACL", ("aws.s3.bucket_public_write",), ("s3_bucket_public_write_acl",),
          resource="weak-public-data", teamtnt=True),
    Plant("CloudTrail trail not logging / no multi-region trail",
          ("aws.cloudtrail.trail_not_logging", "aws.cloudtrail.no_multi_region_trail"),
          ("cloudtrail_multi_region_enabled",), teamtnt=True),
    Plant("GuardDuty off (none in us-east-1, disabled in eu-west-1)", ("aws.guardduty.not_enabled",),
          ("guardduty_is_enabled",), teamtnt=True),
    Plant("ECR without scan-on-push", ("aws.ecr.no_scan_on_push",), ("ecr_repositories_scan_images_on_push_enabled",),
          resource="weak-repo", teamtnt=True),
    Plant("EKS endpoint public to 0.0.0.0/0", ("aws.eks.public_endpoint",), ("eks_cluster_not_publicly_accessible",),
          resource="weak-cluster", teamtnt=True),
    # the rest of the weak account
    Plant("SG open to the world on every port", ("aws.ec2.sg_world_all_ports",),
          ("ec2_securitygroup_allow_ingress_from_internet_to_all_ports",)),
    Plant("SG open to the world on a wide range (30000-32767)", ("aws.ec2.sg_world_wide_range",), (),
          ("ec2_securitygroup_allow_ingress_from_internet_to_any_port",)),
    Plant("SG open to ::/0 on 22", ("aws.ec2.sg_ipv6_admin_ports",), (),
          ("ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_22",)),
    Plant("SG open to the world on 6443 (Kubernetes API)", ("aws.ec2.sg_world_kubernetes_api",), (), SG_ANY),
    Plant("SG open to the world on 27017 (MongoDB)", ("aws.ec2.sg_world_mongodb",),
          ("ec2_securitygroup_allow_ingress_from_internet_to_tcp_port_mongodb_27017_27018",)),
    Plant("Metadata hop limit 2 (reachable from containers)", ("aws.ec2.instance_metadata_hop_limit",), ()),
    Plant("Instance without a role", ("aws.ec2.instance_without_role",), ("ec2_instance_profile_attached",)),
    Plant("Public AMI", ("aws.ec2.ami_public",), ("ec2_ami_public",)),
    Plant("Public EBS snapshot", ("aws.ec2.snapshot_public",), ("ec2_ebs_public_snapshot",)),
    Plant("EBS snapshot shared with another account", ("aws.ec2.snapshot_shared",), ()),
    Plant("Unencrypted volumes and snapshots", ("aws.ec2.volume_unencrypted", "aws.ec2.snapshot_unencrypted"),
          ("ec2_ebs_volume_encryption", "ec2_ebs_snapshots_encrypted")),
    Plant("Non-admin user with inline privilege escalation", ("aws.iam.user_inline_escalation",),
          ("iam_policy_allows_privilege_escalation",), resource="ci-deployer"),
    Plant("Customer policy allowing privilege escalation", ("aws.iam.policy_privilege_escalation",),
          ("iam_policy_allows_privilege_escalation",), resource="escalator"),
    Plant("Unattached `*:*` policy", ("aws.iam.policy_admin_unattached",),
          ("iam_customer_unattached_policy_no_administrative_privileges",), resource="unused-admin"),
    Plant("Policy granting a whole service (s3:*)", ("aws.iam.policy_service_wildcard",), (), resource="s3-everything"),
    Plant("Role trusting any AWS principal", ("aws.iam.role_trust_public",), (), resource="open-trust"),
    Plant("Cross-account role without an external id", ("aws.iam.role_cross_account_no_external_id",), (),
          resource="vendor"),
    Plant("Weak password policy (length 8, no classes, reuse 1)", ("aws.iam.password_min_length",),
          ("iam_password_policy_minimum_length_14",)),
    Plant("Latent-public bucket (policy `*` held back by a block)", ("aws.s3.bucket_latent_public",),
          (), ("s3_bucket_cross_account_access",), resource="weak-latent"),
    Plant("Account-level S3 public access block off", ("aws.s3.account_public_access_block_off",),
          ("s3_account_level_public_access_blocks",)),
    Plant("Trail writing to a public bucket", ("aws.cloudtrail.bucket_public",),
          ("cloudtrail_logs_s3_bucket_is_not_publicly_accessible",)),
    Plant("Trail records write-only management events", ("aws.cloudtrail.partial_management_events",),
          ("cloudtrail_multi_region_enabled_logging_management_events",)),
    Plant("Trail without log file validation", ("aws.cloudtrail.log_validation_off",),
          ("cloudtrail_log_file_validation_enabled",)),
    Plant("Config recorder partial / absent", ("aws.config.partial_recording", "aws.config.no_recorder"),
          ("config_recorder_all_regions_enabled",)),
    Plant("KMS key without rotation", ("aws.kms.rotation_off",), ("kms_cmk_rotation_enabled",)),
    Plant("KMS key policy open to `*`", ("aws.kms.policy_public",), ("kms_key_not_publicly_accessible",)),
    Plant("KMS key pending deletion", ("aws.kms.pending_deletion",), ("kms_cmk_not_deleted_unintentionally",)),
    Plant("Lambda on a deprecated runtime (python3.7)", ("aws.lambda.deprecated_runtime",),
          ("awslambda_function_using_supported_runtimes",)),
    Plant("Lambda secret in environment variables", ("aws.lambda.secret_env_names",),
          ("awslambda_function_no_secrets_in_variables",)),
    Plant("Lambda function URL without auth", ("aws.lambda.public_url",), ("awslambda_function_url_public",)),
    Plant("Lambda resource policy open to `*`", ("aws.lambda.policy_public",),
          ("awslambda_function_not_publicly_accessible",)),
    Plant("ECR repository policy open to `*`", ("aws.ecr.policy_public",),
          ("ecr_repositories_not_publicly_accessible",)),
    Plant("EKS control plane logging off", ("aws.eks.control_plane_logging_incomplete",),
          ("eks_control_plane_logging_all_types_enabled",), resource="weak-cluster"),
    Plant("EKS public endpoint restricted to a CIDR", ("aws.eks.public_endpoint_restricted",), (),
          resource="narrow-cluster"),
    Plant("RDS instance publicly accessible", ("aws.rds.public",), ("rds_instance_no_public_access",)),
    Plant("RDS storage unencrypted", ("aws.rds.unencrypted",), ("rds_instance_storage_encrypted",)),
    Plant("RDS backups kept 1 day", ("aws.rds.short_backups",), ("rds_instance_backup_enabled",)),
    Plant("RDS auto minor upgrade off", ("aws.rds.auto_minor_upgrade_off",),
          ("rds_instance_minor_version_upgrade_enabled",)),
    Plant("Public RDS snapshot", ("aws.rds.snapshot_public",), ("rds_snapshots_public_access",)),
    # moto's defaults the weak account keeps and the hardened one changes
    Plant("RDS parameter group does not force TLS", ("aws.rds.tls_not_required",),
          ("rds_instance_transport_encrypted",), resource="weak-db"),
    Plant("RDS engine past standard support (PostgreSQL 9.3)", ("aws.rds.engine_version_unsupported",),
          ("rds_instance_deprecated_engine_version",), resource="weak-db"),
    Plant("Bucket still honours ACLs", ("aws.s3.bucket_acls_enabled",), ("s3_bucket_acl_prohibited",),
          resource="weak-public-data"),
    Plant("No trail records S3 object reads and writes",
          ("aws.cloudtrail.no_s3_read_data_events", "aws.cloudtrail.no_s3_write_data_events"),
          ("cloudtrail_s3_dataevents_read_enabled", "cloudtrail_s3_dataevents_write_enabled")),
    Plant("No trail records Lambda invocations", ("aws.cloudtrail.no_lambda_data_events",),
          ("awslambda_function_invoke_api_operations_cloudtrail_logging_enabled",)),
    Plant("ECR registry on basic scanning", ("aws.ecr.basic_scanning",), ("ecr_registry_enhanced_scanning_enabled",)),
    Plant("Subnets hand out public IPs", ("aws.ec2.subnet_auto_public_ip",), ("vpc_subnet_no_public_ip_by_default",)),
    Plant("Instances with a public IP", ("aws.ec2.instance_public_ip",), ("ec2_instance_public_ip",)),
    Plant("Console user whose only MFA is a virtual device", ("aws.iam.user_virtual_mfa_only",),
          ("iam_user_hardware_mfa_enabled",), resource="ops-dave"),
    Plant("Volumes in no AWS Backup plan", ("aws.backup.volume_not_protected",),
          ("ec2_ebs_volume_protected_by_backup_plan",)),
    Plant("Instances without the SSM agent", ("aws.ssm.instance_not_managed",), ("ec2_instance_managed_by_ssm",)),
)


PLANT_RULES = {p.what: p.rules for p in PLANTS}


# --- running -----------------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=accounts.HOME,
               AWS_CONFIG_FILE="/nonexistent/bench-config", AWS_SHARED_CREDENTIALS_FILE="/nonexistent/bench-creds")
    return env


def run_cloudward(endpoint: str) -> tuple[float, dict[str, Any], str]:
    argv = [str(CLOUDWARD), "conformity", "scan", "aws", "--endpoint-url", endpoint, "--assume-role", ROLE,
            "--regions", ",".join(accounts.REGIONS), "--format", "json", "--no-store"]
    done = measure(argv, env=clean_env(), timeout=600)
    if done.returncode not in (0, 1):
        raise SystemExit(f"cloudward failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.seconds, json.loads(done.stdout), done.stderr.strip().splitlines()[-1] if done.stderr else ""


def run_prowler(endpoint: str, out: Path, name: str) -> tuple[float, list[dict[str, Any]]]:
    argv = [str(PROWLER), "aws", "--no-banner", "--no-color", "--role", ROLE, "--region", *accounts.REGIONS,
            "--service", *PROWLER_SERVICES, "--output-formats", "json-ocsf", "--output-directory", str(out),
            "--output-filename", name, "--ignore-exit-code-3", "--log-level", "CRITICAL"]
    done = measure(argv, env={**clean_env(), "AWS_ENDPOINT_URL": endpoint}, timeout=3600)
    report = out / f"{name}.ocsf.json"
    if done.returncode != 0 or not report.exists():
        raise SystemExit(f"prowler failed ({done.returncode}): {(done.stdout + done.stderr)[-3000:]}")
    return done.seconds, json.loads(report.read_text())


# --- comparing ---------------------------------------------------------------------------------------


def cloudward_hits(report: dict[str, Any]) -> dict[str, list[str]]:
    """rule id -> the resources (ARN and scope path) it fired on."""
    hits: dict[str, list[str]] = {}
    for finding in report.get("findings", []):
        where = f"{finding['target']['name']} {finding.get('location', {}).get('path', '')}"
        hits.setdefault(finding["rule_id"], []).append(where)
    return hits


def prowler_hits(findings: list[dict[str, Any]]) -> dict[str, list[str]]:
    """FAIL check id -> the resources it failed on (uid, name and the finding's text)."""
    hits: dict[str, list[str]] = {}
    for finding in findings:
        if finding.get("status_code") != "FAIL":
            continue
        res = (finding.get("resources") or [{}])[0]
        where = f"{res.get('uid', '')} {res.get('name', '')} {finding.get('status_detail', '')}"
        hits.setdefault(finding["metadata"]["event_code"], []).append(where)
    return hits


def found(hits: dict[str, list[str]], ids: tuple[str, ...], resource: str) -> list[str]:
    return [i for i in ids if any(resource.lower() in w.lower() for w in hits.get(i, []))]


def coverage(cw: dict[str, list[str]], pw: dict[str, list[str]]) -> list[dict[str, Any]]:
    rows = []
    for plant in PLANTS:
        cw_by = found(cw, plant.rules, plant.resource)
        pw_by = found(pw, plant.checks, plant.resource)
        pw_generic = [] if pw_by else found(pw, plant.generic, plant.resource)
        rows.append({"what": plant.what, "teamtnt": plant.teamtnt, "cloudward": cw_by, "prowler": pw_by,
                     "prowler_generic": pw_generic, "note": plant.note, "plantable": plant.plantable})
    return rows


def gaps(cw: dict[str, list[str]], pw: dict[str, list[str]]) -> list[tuple[str, int, str]]:
    """Prowler FAIL checks with no cloudward rule mapped, or whose mapped rules did not fire."""
    out = []
    for check in sorted(pw):
        rules = MAPPING.get(check)
        if not rules:
            out.append((check, len(pw[check]), DECLINED.get(check, "no cloudward rule")))
        elif not any(r in cw for r in rules):
            out.append((check, len(pw[check]), f"mapped to {', '.join(rules)}, which did not fire"))
    return out


def render(cw_times: list[float], pw_times: list[float], rows: list[dict[str, Any]],
           missing: list[tuple[str, int, str]], cw_report: dict[str, Any], pw_findings: list[dict[str, Any]],
           prowler_version: str, netns: bool, runs: int) -> str:
    cw_med, pw_med = statistics.median(cw_times), statistics.median(pw_times)
    stats = cw_report["scan"].get("stats", {})
    fails = sum(1 for f in pw_findings if f.get("status_code") == "FAIL")
    checks = len({f["metadata"]["event_code"] for f in pw_findings})
    failing = len({f["metadata"]["event_code"] for f in pw_findings if f.get("status_code") == "FAIL"})
    planted = [r for r in rows if r["plantable"]]
    found_cw = sum(1 for r in planted if r["cloudward"])
    found_pw = sum(1 for r in planted if r["prowler"])
    generic_pw = sum(1 for r in planted if not r["prowler"] and r["prowler_generic"])
    tnt = [r for r in planted if r["teamtnt"]]
    lines = [
        "## AWS account posture: cloudward vs Prowler",
        "",
        f"{today()}, {machine()}. `benchmarks/conformity/prowler.py`: one moto server on 127.0.0.1 with the weak "
        f"account of `tests/conformity/aws/accounts.py` planted ({accounts.WEAK}, regions "
        f"{', '.join(accounts.REGIONS)}); both tools assume the same audit role and read the same services "
        f"(cloudward: {', '.join(CLOUDWARD_SERVICES)}; Prowler {prowler_version}: `--service "
        f"{' '.join(PROWLER_SERVICES)}`, `vpc` being where Prowler keeps the flow-log and subnet checks that "
        f"cloudward's ec2 collector covers; cloudward also reads organizations, backup and ssm, through a loopback "
        f"proxy that answers the two calls moto lacks, SSM DescribeInstanceInformation and Backup "
        f"ListBackupSelections, and forwards the rest: its times include that hop). Runs alternate, {runs} each; "
        + ("everything ran in a network namespace of its own (`unshare -rn`, loopback only), so neither tool "
           "could reach beyond 127.0.0.1." if netns else "run without a network namespace (--no-netns)."),
        "",
        "| tool | wall clock (median) | runs (s) | output |",
        "| --- | ---: | --- | --- |",
        f"| cloudward `conformity scan aws` | {cw_med:.2f} s | {', '.join(f'{t:.2f}' for t in cw_times)} | "
        f"{len(cw_report['findings'])} findings, {stats.get('resources', '?')} resources, "
        f"{stats.get('api_calls', '?')} API calls, {len(cw_report['scan'].get('errors', []))} errors |",
        f"| Prowler {prowler_version} | {pw_med:.2f} s | {', '.join(f'{t:.2f}' for t in pw_times)} | "
        f"{fails} FAIL of {len(pw_findings)} results, {checks} checks with a result |",
        "",
        f"**cloudward is {pw_med / cw_med:.1f}x faster** (goal: at least 5x).",
        "",
        f"Planted misconfigurations found: cloudward {found_cw}/{len(planted)}, Prowler {found_pw}/{len(planted)} by a "
        f"check that names the problem (+{generic_pw} where a broader check flags the resource without naming "
        f"it). TeamTNT-relevant: cloudward {sum(1 for r in tnt if r['cloudward'])}/{len(tnt)}, Prowler "
        f"{sum(1 for r in tnt if r['prowler'])}/{len(tnt)}.",
        "",
        "| planted misconfiguration | cloudward | Prowler |",
        "| --- | --- | --- |",
    ]
    for row in rows:
        cw = "yes: " + ", ".join(f"`{r}`" for r in row["cloudward"]) if row["cloudward"] else "**no**"
        if not row["plantable"]:
            cw = "not planted (" + ", ".join(f"`{r}`" for r in PLANT_RULES[row["what"]]) + " has fixtures)"
        if row["prowler"]:
            pw = "yes: " + ", ".join(f"`{c}`" for c in row["prowler"])
        elif row["prowler_generic"]:
            pw = "only generically: " + ", ".join(f"`{c}`" for c in row["prowler_generic"])
        else:
            pw = "no"
        what = f"{row['what']}{' (TeamTNT)' if row['teamtnt'] else ''}"
        if row["note"]:
            what += f" — {row['note']}"
        lines.append(f"| {what} | {cw} | {pw} |")
    lines += [
        "",
        f"Prowler FAIL checks on the weak account that no cloudward rule answers ({len(missing)} of {failing} "
        "failing checks; the mapping is the `MAPPING` table in the script):",
        "",
        "| Prowler check | FAIL results | why cloudward has no rule for it |",
        "| --- | ---: | --- |",
    ]
    for check, count, why in missing:
        lines.append(f"| `{check}` | {count} | {why} |")
    return "\n".join(lines) + "\n"


def prowler_version() -> str:
    done = subprocess.run([str(ROOT / ".venv-prowler" / "bin" / "pip"), "show", "prowler"], capture_output=True,
                          text=True)
    return next((line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("Version:")),
                "?")


def in_netns(argv: list[str]) -> int:
    """Run this script again inside a new user+network namespace where only loopback is up."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        raise SystemExit("--netns needs unshare(1) and ip(8) (util-linux, iproute2), or pass --no-netns")
    inner = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} {' '.join(argv)}"
    return subprocess.run(["unshare", "-rn", "sh", "-c", inner], env={**os.environ, NETNS_FLAG: "1"}).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/BENCHMARKS.md")
    parser.add_argument("--no-netns", action="store_true", help="do not isolate the run in a network namespace")
    args = parser.parse_args()
    if not PROWLER.exists():
        raise SystemExit("Prowler is missing: run benchmarks/conformity/setup-prowler")
    if not args.no_netns and os.environ.get(NETNS_FLAG) != "1":
        raise SystemExit(in_netns(sys.argv[1:]))
    netns = os.environ.get(NETNS_FLAG) == "1"
    version = prowler_version()
    with start_process("moto-bench", lambda s: [str(MOTO), "-H", s.host, "-p", str(s.port)],
                       env={**clean_env(), **MOTO_ENV}) as moto, tempfile.TemporaryDirectory() as tmp:
        endpoint = f"http://{moto.host}:{moto.port}"
        saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        outside = accounts.OutsideMoto()
        accounts.plant_weak(endpoint, outside)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        print(f"moto on {endpoint}, weak account planted; {args.runs} runs each "
              f"({'network namespace' if netns else 'host network'})", flush=True)
        cw_times: list[float] = []
        pw_times: list[float] = []
        cw_report: dict[str, Any] = {}
        pw_findings: list[dict[str, Any]] = []
        with MotoPlus(endpoint, outside) as plus:  # cloudward's view: moto + the two APIs it lacks
            for i in range(args.runs):
                seconds, cw_report, summary = run_cloudward(plus.url)
                cw_times.append(seconds)
                print(f"run {i + 1}: cloudward {seconds:.2f}s  ({summary})", flush=True)
                seconds, pw_findings = run_prowler(endpoint, Path(tmp), f"run{i}")
                pw_times.append(seconds)
                print(f"run {i + 1}: prowler   {seconds:.2f}s  ({len(pw_findings)} results)", flush=True)
    cw, pw = cloudward_hits(cw_report), prowler_hits(pw_findings)
    rows = coverage(cw, pw)
    missing = gaps(cw, pw)
    text = render(cw_times, pw_times, rows, missing, cw_report, pw_findings, version, netns, args.runs)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
        print(f"wrote the {SECTION} section of docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
