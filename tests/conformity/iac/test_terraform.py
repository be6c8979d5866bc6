"""Terraform: variables, locals and local modules substituted the way `terraform plan` would, plan
JSON read from planned values and resource changes, and unknown values never firing a rule."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import hits, rule_ids, scan, write_tree

ROOT_MAIN = '''variable "admin_cidr" {
  default = "0.0.0.0/0"
}
locals {
  ssh = 22
}
module "net" {
  source = "../../modules/net"
  cidr   = var.admin_cidr
  port   = local.ssh
}
module "registry" {
  source = "terraform-aws-modules/vpc/aws"
}
'''
NET = '''variable "cidr" {
  default = "10.0.0.0/8"
}
variable "port" {}
resource "aws_security_group" "this" {
  ingress {
    from_port   = var.port
    to_port     = var.port
    protocol    = "tcp"
    cidr_blocks = [var.cidr]
  }
}
module "disks" {
  source  = "../disks"
  encrypt = false
}
'''
DISKS = '''variable "encrypt" {
  default = true
}
resource "aws_ebs_volume" "v" {
  availability_zone = "eu-west-1a"
  encrypted         = var.encrypt
}
'''


def test_module_inputs_reach_resources_reported_at_their_own_file_and_line(tmp_path: Path) -> None:
    write_tree(tmp_path, {"env/prod/main.tf": ROOT_MAIN, "modules/net/sg.tf": NET, "modules/disks/vol.tf": DISKS})
    result = scan(tmp_path)
    # the registry module was never downloaded: one note saying so, not a finding
    assert [(e.target, e.stage) for e in result.errors] == [("env/prod/main.tf", "terraform")]
    assert "module.registry (terraform-aws-modules/vpc/aws): not resolved (run terraform init)" in \
        result.errors[0].message
    assert hits(result) == {("iac.tf.sg_world_ssh", "modules/net/sg.tf", 6),  # its ingress block
                            ("iac.tf.ebs_volume_unencrypted", "modules/disks/vol.tf", 4)}
    by_rule = {f.rule_id: f for f in result.findings}
    ssh = by_rule["iac.tf.sg_world_ssh"]
    assert ssh.location["module"] == "env/prod/main.tf:7 (module.net)"
    assert ssh.location["resource"] == "module.net.aws_security_group.this"
    assert ssh.evidence["cidrs"] == ["0.0.0.0/0"] and ssh.evidence["from_port"] == 22
    disks = by_rule["iac.tf.ebs_volume_unencrypted"]
    assert disks.location["resource"] == "module.net.module.disks.aws_ebs_volume.v"


def test_module_defaults_apply_when_the_call_passes_nothing(tmp_path: Path) -> None:
    # Called without `cidr`: the module's own default (10.0.0.0/8) applies, so nothing is open.
    main = ROOT_MAIN.replace("  cidr   = var.admin_cidr\n", "")
    write_tree(tmp_path, {"env/prod/main.tf": main, "modules/net/sg.tf": NET, "modules/disks/vol.tf": DISKS})
    assert "iac.tf.sg_world_ssh" not in rule_ids(scan(tmp_path))


def test_a_module_directory_scanned_alone_is_its_own_root(tmp_path: Path) -> None:
    # modules/net on its own: var.port has no default, so the ports are unknown and no port rule fires
    write_tree(tmp_path, {"sg.tf": NET.replace('default = "10.0.0.0/8"', 'default = "0.0.0.0/0"')})
    result = scan(tmp_path)
    assert not result.errors
    assert not any(r.startswith("iac.tf.sg_world") for r in rule_ids(result))


def test_variable_default_and_locals_are_substituted(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": '''variable "world" {
  default = "0.0.0.0/0"
}
locals {
  redis = 6379
  open  = var.world
}
resource "aws_security_group_rule" "redis" {
  type        = "ingress"
  from_port   = local.redis
  to_port     = local.redis
  protocol    = "tcp"
  cidr_blocks = [local.open]
}
'''})
    assert hits(scan(tmp_path)) == {("iac.tf.sg_world_redis", "main.tf", 8)}


def test_unknown_values_never_fire(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": '''resource "aws_security_group_rule" "x" {
  type        = "ingress"
  from_port   = 22
  to_port     = 22
  protocol    = "tcp"
  cidr_blocks = [data.aws_ip_ranges.x.cidr_blocks]
}
resource "aws_db_instance" "db" {
  publicly_accessible = var.is_public
  storage_encrypted   = true
}
resource "aws_instance" "i" {
  metadata_options {
    http_tokens = var.tokens
  }
}
'''})
    result = scan(tmp_path)
    assert not result.errors and not result.findings


def test_inline_and_jsonencoded_and_heredoc_policies(tmp_path: Path) -> None:
    write_tree(tmp_path, {"iam.tf": '''resource "aws_iam_role" "r" {
  name = "r"
  assume_role_policy = jsonencode({ Statement = [{ Effect = "Allow", Principal = "*", Action = "sts:AssumeRole" }] })
  inline_policy {
    name   = "all"
    policy = jsonencode({ Statement = [{ Effect = "Allow", Action = ["*"], Resource = ["*"] }] })
  }
}
resource "aws_iam_user_policy" "u" {
  user   = "ci"
  policy = <<EOT
{"Statement": {"Effect": "Allow", "Action": "*:*", "Resource": "*"}}
EOT
}
'''})
    assert hits(scan(tmp_path)) == {("iac.tf.iam_role_trust_any_principal", "iam.tf", 1),
                                    ("iac.tf.iam_policy_full_admin", "iam.tf", 4),  # the inline_policy block
                                    ("iac.tf.iam_policy_full_admin", "iam.tf", 9)}


def test_public_access_block_is_matched_to_its_bucket(tmp_path: Path) -> None:
    write_tree(tmp_path, {"s3.tf": '''resource "aws_s3_bucket" "guarded" {
  bucket = "guarded"
}
resource "aws_s3_bucket" "bare" {
  bucket = "bare"
}
resource "aws_s3_bucket_public_access_block" "g" {
  bucket                  = aws_s3_bucket.guarded.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}
'''})
    assert hits(scan(tmp_path)) == {("iac.tf.s3_no_public_access_block", "s3.tf", 4)}


PLAN = {
    "format_version": "1.2",
    "planned_values": {"root_module": {
        "resources": [{"address": "aws_db_instance.db", "mode": "managed", "type": "aws_db_instance", "name": "db",
                       "values": {"engine": "postgres", "publicly_accessible": True, "storage_encrypted": True,
                                  "kms_key_id": None}}],
        "child_modules": [{"address": "module.k", "resources": [
            {"address": "module.k.aws_instance.i", "mode": "managed", "type": "aws_instance", "name": "i",
             "values": {"ami": "ami-1", "metadata_options": [{"http_tokens": "optional"}],
                        "root_block_device": [{"encrypted": True}]}}]}],
    }},
}


def test_plan_json_planned_values_with_child_modules(tmp_path: Path) -> None:
    (tmp_path / "prod.tfplan.json").write_text(json.dumps(PLAN, indent=2))
    result = scan(tmp_path)
    assert not result.errors
    found = {(f.rule_id, f.location["resource"]) for f in result.findings}
    assert found == {("iac.tf.rds_public", "aws_db_instance.db"), ("iac.tf.instance_imdsv1", "module.k.aws_instance.i")}
    lines = {f.location["resource"]: f.location["line"] for f in result.findings}
    text = (tmp_path / "prod.tfplan.json").read_text().splitlines()
    assert '"address": "module.k.aws_instance.i"' in text[lines["module.k.aws_instance.i"] - 1]


def test_plan_json_from_resource_changes_under_any_json_name(tmp_path: Path) -> None:
    plan = {"resource_changes": [{"address": "aws_ecr_repository.app", "mode": "managed", "type": "aws_ecr_repository",
                                  "name": "app", "change": {"actions": ["create"], "after": {
                                      "name": "app", "image_tag_mutability": "IMMUTABLE",
                                      "image_scanning_configuration": [{"scan_on_push": False}]}}}]}
    write_tree(tmp_path, {"out/plan.json": json.dumps(plan), "package.json": '{"name": "not-a-plan"}'})
    result = scan(tmp_path)
    assert hits(result) == {("iac.tf.ecr_scan_on_push_disabled", "out/plan.json", 1)}
    assert result.stats["terraform_plan"] == 1


def test_a_misnamed_plan_is_an_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"x.tfplan.json": '{"not": "a plan"}'})
    result = scan(tmp_path)
    assert [e.target for e in result.errors] == ["x.tfplan.json"]
