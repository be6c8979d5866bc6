"""Terraform values the way `terraform plan` sees them: variables files and `--var-file`/`--var`
in Terraform's precedence, and `count` / `for_each` expanded into addressed instances, with
`count.index`, `each.key` and `each.value` resolved inside the body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import hits, rule_ids, scan, write_tree

DB = '''variable "public" {
  default = false
}
resource "aws_db_instance" "db" {
  engine              = "postgres"
  publicly_accessible = var.public
  storage_encrypted   = true
}
'''


def resources(result: object) -> set[tuple[str, str]]:
    return {(f.rule_id, str(f.location["resource"])) for f in result.findings}  # type: ignore[attr-defined]


# --- variables files ---------------------------------------------------------------------------------

def test_terraform_tfvars_turns_a_rule_on(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": DB, "terraform.tfvars": "public = true\n"})
    result = scan(tmp_path)
    assert not result.errors
    assert hits(result) == {("iac.tf.rds_public", "main.tf", 4)}
    assert result.stats["tfvars"] == 1


def test_without_tfvars_the_default_holds(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": DB, "prod.tfvars": "public = true\n"})  # not loaded by itself
    assert "iac.tf.rds_public" not in rule_ids(scan(tmp_path))


def test_auto_tfvars_override_terraform_tfvars_in_lexical_order(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": DB, "terraform.tfvars": "public = true\n",
                          "terraform.tfvars.json": json.dumps({"public": True}),
                          "a.auto.tfvars": "public = true\n", "b.auto.tfvars.json": json.dumps({"public": False})})
    assert "iac.tf.rds_public" not in rule_ids(scan(tmp_path))  # b.auto.tfvars.json is last and wins
    (tmp_path / "c.auto.tfvars").write_text("public = true\n")
    assert "iac.tf.rds_public" in rule_ids(scan(tmp_path))


def test_var_file_and_var_come_last(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", {"main.tf": DB, "terraform.tfvars": "public = true\n"})
    off = tmp_path / "off.tfvars"
    off.write_text("public = false\n")
    on = tmp_path / "on.tfvars.json"
    on.write_text('{"public": true}')
    assert "iac.tf.rds_public" not in rule_ids(scan(tmp_path / "tree", var_files=[str(off)]))
    assert "iac.tf.rds_public" in rule_ids(scan(tmp_path / "tree", var_files=[str(off), str(on)]))
    assert "iac.tf.rds_public" not in rule_ids(scan(tmp_path / "tree", var_files=[str(on)],
                                                    variables=[("public", "false")]))


def test_tfvars_feed_only_root_modules(tmp_path: Path) -> None:
    # a module's own terraform.tfvars is not read when it is called (Terraform ignores it too)
    write_tree(tmp_path, {"root/main.tf": 'module "db" {\n  source = "../db"\n}\n',
                          "db/main.tf": DB, "db/terraform.tfvars": "public = true\n"})
    assert "iac.tf.rds_public" not in rule_ids(scan(tmp_path))


def test_a_malformed_tfvars_is_a_named_error_and_the_defaults_hold(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": DB.replace("default = false", "default = true"),
                          "terraform.tfvars": "public = [\n", "x.auto.tfvars.json": "[1, 2]",
                          "y.auto.tfvars": 'resource "a" "b" {}\n'})
    result = scan(tmp_path)
    assert sorted(e.target for e in result.errors) == ["terraform.tfvars", "x.auto.tfvars.json", "y.auto.tfvars"]
    assert all("its values are not used" in e.message for e in result.errors)
    assert "iac.tf.rds_public" in rule_ids(result)  # the default (true) still judged


def test_a_missing_or_broken_var_file_is_a_named_error(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", {"main.tf": DB})
    broken = tmp_path / "broken.tfvars"
    broken.write_text("public = = true\n")
    result = scan(tmp_path / "tree", var_files=[str(tmp_path / "nope.tfvars"), str(broken)])
    assert sorted(e.target for e in result.errors) == sorted([str(tmp_path / "nope.tfvars"), str(broken)])
    assert not result.findings


# --- count -------------------------------------------------------------------------------------------

INSTANCES = '''variable "n" {
  default = 2
}
variable "enabled" {
  default = false
}
resource "aws_instance" "web" {
  count = var.n
  ami   = "ami-${count.index}"
  metadata_options {
    http_tokens = count.index == 1 ? "optional" : "required"
  }
  root_block_device {
    encrypted = true
  }
}
resource "aws_db_instance" "legacy" {
  count               = var.enabled ? 1 : 0
  engine              = "postgres"
  publicly_accessible = true
  storage_encrypted   = true
}
'''


def test_count_expands_into_addressed_instances_with_count_index(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": INSTANCES})
    result = scan(tmp_path)
    assert not result.errors
    # only instance [1] asks for IMDSv1; the disabled database is not judged at all
    assert resources(result) == {("iac.tf.instance_imdsv1", "aws_instance.web[1]")}
    assert hits(result) == {("iac.tf.instance_imdsv1", "main.tf", 7)}  # the block's file and line
    assert result.stats["terraform_resources"] == 2


def test_count_zero_vs_enabled(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": INSTANCES, "terraform.tfvars": "n = 0\nenabled = true\n"})
    assert resources(scan(tmp_path)) == {("iac.tf.rds_public", "aws_db_instance.legacy[0]")}


def test_count_from_a_cli_string_and_huge_counts(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": INSTANCES})
    assert ("iac.tf.instance_imdsv1", "aws_instance.web[1]") in resources(scan(tmp_path, variables=[("n", "3")]))
    result = scan(tmp_path, variables=[("n", "10000000")])
    # beyond the bound: judged once as written (count.index unknown, so no IMDS verdict) and a warning
    assert not result.findings and result.stats["terraform_resources"] == 1
    assert [e.target for e in result.errors] == ["main.tf"]
    assert "more than 1,000 instances: judged once as written" in result.errors[0].message


def test_an_unresolvable_count_judges_the_block_once_as_written(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": '''resource "aws_db_instance" "db" {
  count               = length(data.aws_subnets.x.ids)
  publicly_accessible = true
  storage_encrypted   = true
}
resource "aws_db_instance" "neg" {
  count               = -1
  publicly_accessible = true
  storage_encrypted   = true
}
resource "aws_db_instance" "both" {
  count               = 2
  for_each            = toset(["a"])
  publicly_accessible = true
  storage_encrypted   = true
}
'''})
    result = scan(tmp_path)
    assert not result.errors
    assert resources(result) == {("iac.tf.rds_public", "aws_db_instance.db"),
                                 ("iac.tf.rds_public", "aws_db_instance.neg"),
                                 ("iac.tf.rds_public", "aws_db_instance.both")}


# --- for_each ----------------------------------------------------------------------------------------

SGS = '''variable "rules" {
  default = {
    admin = { cidr = "0.0.0.0/0", port = 22 }
    web   = { cidr = "0.0.0.0/0", port = 443 }
    cache = { cidr = "10.0.0.0/8", port = 6379 }
  }
}
resource "aws_security_group" "sg" {
  for_each = var.rules
  name     = "sg-${each.key}"
  ingress {
    from_port   = each.value.port
    to_port     = each.value["port"]
    protocol    = "tcp"
    cidr_blocks = [each.value.cidr]
  }
}
resource "aws_s3_bucket" "b" {
  for_each = toset(["logs", "data"])
  bucket   = "estate-${each.key}"
}
resource "aws_s3_bucket_public_access_block" "b" {
  for_each                = toset(["logs"])
  bucket                  = aws_s3_bucket.b[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}
'''


def test_for_each_over_a_map_judges_each_key(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": SGS})
    result = scan(tmp_path)
    assert not result.errors
    found = resources(result)
    assert ("iac.tf.sg_world_ssh", 'aws_security_group.sg["admin"]') in found
    assert not any('sg["web"]' in r or 'sg["cache"]' in r for _, r in found)  # 443 is fine, cache is private
    ssh = next(f for f in result.findings if f.rule_id == "iac.tf.sg_world_ssh")
    assert (ssh.location["path"], ssh.location["line"]) == ("main.tf", 11)  # the ingress block of the block
    # instances are distinct findings: each has its own fingerprint
    assert len({f.fingerprint for f in result.findings}) == len(result.findings)


def test_for_each_over_a_set_names_each_instance(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": SGS})
    buckets = {r for rule, r in resources(scan(tmp_path)) if rule == "iac.tf.s3_no_public_access_block"}
    # the public access block guards the "logs" instance only
    assert buckets == {'aws_s3_bucket.b["data"]'}


def test_tfvars_change_a_for_each_value(tmp_path: Path) -> None:
    safe = json.dumps({"rules": {"admin": {"cidr": "192.0.2.0/24", "port": 22}}})
    write_tree(tmp_path, {"main.tf": SGS, "terraform.tfvars.json": safe})
    assert "iac.tf.sg_world_ssh" not in rule_ids(scan(tmp_path))
    opened = scan(tmp_path, variables=[("rules", '{ ops = { cidr = "0.0.0.0/0", port = 22 } }')])
    assert ("iac.tf.sg_world_ssh", 'aws_security_group.sg["ops"]') in resources(opened)


def test_for_each_over_an_unresolvable_value_judges_once(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": '''resource "aws_security_group" "sg" {
  for_each = data.external.rules.result
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
resource "aws_security_group" "odd" {
  for_each = [1, 2]
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [each.value]
  }
}
'''})
    result = scan(tmp_path)
    assert not result.errors
    assert resources(result) == {("iac.tf.sg_world_ssh", "aws_security_group.sg")}


def test_counted_module_calls_expand_with_their_index(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "env/main.tf": '''locals {
  envs = { dev = true, prod = false }
}
module "db" {
  source   = "../db"
  for_each = local.envs
  public   = each.value
}
module "none" {
  source = "../db"
  count  = 0
  public = true
}
''',
        "db/main.tf": DB})
    result = scan(tmp_path)
    assert not result.errors
    assert resources(result) == {("iac.tf.rds_public", 'module.db["dev"].aws_db_instance.db')}
    assert hits(result) == {("iac.tf.rds_public", "db/main.tf", 4)}


def test_nested_counted_modules_stay_within_the_resource_budget(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudward.conformity.iac import terraform

    monkeypatch.setattr(terraform, "MAX_RESOURCES", 500)  # a real scan's 20,000 would cost seconds here
    write_tree(tmp_path, {
        "root/main.tf": 'module "outer" {\n  source = "../outer"\n  count  = 1000\n}\n',
        "outer/main.tf": 'module "inner" {\n  source = "../inner"\n  count  = 1000\n}\n',
        "inner/main.tf": 'resource "aws_db_instance" "db" {\n  count = 1000\n  publicly_accessible = true\n'
                         '  storage_encrypted = true\n}\n'})
    result = scan(tmp_path)
    # 10^9 resources as written; 500 expanded, then each counted block judged once
    assert result.stats["terraform_resources"] <= 500 + 1_000
    assert any("more than 500 resources in this configuration" in e.message for e in result.errors)


def test_expressions_follow_terraform_precedence_and_functions() -> None:
    from cloudward.conformity.iac import tf_expr

    tables = tf_expr.lookup_in({"var": {"n": 2, "on": "true", "names": ["b", "a", "b"], "m": {"x": {"p": 1}}},
                                "count": {"index": 1}})
    cases = {
        "1 + 2 * 3": 7, "(1 + 2) * 3": 9, "!false && 1 < 2 || false": True, "var.on ? 1 : 0": 1,
        "var.n == 2 ? \"two\" : \"other\"": "two", "length(toset(var.names))": 2, "toset(var.names)": ("a", "b"),
        "{ for k, v in var.m : k => v.p }": {"x": 1}, "[for s in var.names : upper(s) if s != \"a\"]": ["B", "B"],
        "merge({ a = 1 }, { a = 2, b = 3 })": {"a": 2, "b": 3}, "lookup(var.m, \"y\", 5)": 5,
        "\"web-${count.index + 1}\"": "web-2", "range(3)": [0, 1, 2], "-var.n": -2, "10 % 4": 2,
    }
    for text, expected in cases.items():
        assert tf_expr.evaluate(text, tables) == expected, text
    for unknown in ("aws_instance.x.id", "jsondecode(\"{}\")", "var.missing", "data.x.y[0]"):
        try:
            tf_expr.evaluate(unknown, tables)
        except tf_expr.Unknown:
            continue
        raise AssertionError(f"{unknown} should be unknown")
    for broken in ("1 +", "((((", "range(1e9)", "\"unterminated", "1 / 0", "{ a = }"):
        try:
            tf_expr.evaluate(broken, tables)
        except tf_expr.ExprError:
            continue
        raise AssertionError(f"{broken} should be refused")
