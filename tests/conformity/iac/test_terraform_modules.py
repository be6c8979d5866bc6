"""Registry and git modules read from where `terraform init` put them (`.terraform/modules/
modules.json`), never fetched: findings at the module's own file and line, a note when the module
was not downloaded, and a manifest that points outside the scanned tree refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import hits, rule_ids, scan, write_tree

ROOT = '''module "sg" {
  source  = "terraform-aws-modules/security-group/aws"
  version = "5.1.0"
  cidr    = var.cidr
}
variable "cidr" {
  default = "0.0.0.0/0"
}
'''
DOWNLOADED = '''variable "cidr" {
  default = "10.0.0.0/8"
}
resource "aws_security_group" "this" {
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [var.cidr]
  }
}
module "rules" {
  source = "./modules/rules"
  cidr   = var.cidr
}
'''
NESTED = '''variable "cidr" {}
resource "aws_security_group_rule" "redis" {
  type              = "ingress"
  security_group_id = "sg-1"
  from_port         = 6379
  to_port           = 6379
  protocol          = "tcp"
  cidr_blocks       = [var.cidr]
}
'''


def manifest(*entries: tuple[str, str, str]) -> str:
    modules = [{"Key": "", "Source": "", "Dir": "."}]
    modules += [{"Key": key, "Source": source, "Dir": where} for key, source, where in entries]
    return json.dumps({"Modules": modules})


def downloaded_tree(root: Path, cidr: str = "0.0.0.0/0") -> Path:
    return write_tree(root, {
        "env/main.tf": ROOT.replace("0.0.0.0/0", cidr),
        "env/.terraform/modules/modules.json": manifest(
            ("sg", "registry.terraform.io/terraform-aws-modules/security-group/aws", ".terraform/modules/sg"),
            ("sg.rules", "./modules/rules", ".terraform/modules/sg/modules/rules")),
        "env/.terraform/modules/sg/main.tf": DOWNLOADED,
        "env/.terraform/modules/sg/modules/rules/main.tf": NESTED,
    })


def test_a_downloaded_module_is_judged_at_its_own_file_and_line(tmp_path: Path) -> None:
    result = scan(downloaded_tree(tmp_path))
    assert not result.errors
    assert hits(result) == {("iac.tf.sg_world_ssh", "env/.terraform/modules/sg/main.tf", 5),
                            ("iac.tf.sg_world_redis", "env/.terraform/modules/sg/modules/rules/main.tf", 2)}
    by_rule = {f.rule_id: f for f in result.findings}
    assert by_rule["iac.tf.sg_world_ssh"].location["resource"] == "module.sg.aws_security_group.this"
    assert by_rule["iac.tf.sg_world_ssh"].location["module"] == "env/main.tf:1 (module.sg)"
    assert by_rule["iac.tf.sg_world_redis"].location["resource"] == \
        "module.sg.module.rules.aws_security_group_rule.redis"


def test_the_calls_arguments_decide_inside_a_downloaded_module(tmp_path: Path) -> None:
    result = scan(downloaded_tree(tmp_path, cidr="192.0.2.0/24"))
    assert not result.errors and not result.findings  # nor is the module judged alone as a root


def test_without_init_the_module_is_a_note_not_a_finding(tmp_path: Path) -> None:
    write_tree(tmp_path, {"env/main.tf": ROOT})
    result = scan(tmp_path)
    assert not result.findings
    assert [(e.target, e.stage) for e in result.errors] == [("env/main.tf", "terraform")]
    assert result.errors[0].message == ("env/main.tf:1: module.sg (terraform-aws-modules/security-group/aws): "
                                        "not resolved (run terraform init): its resources are not judged")


def test_a_counted_remote_module_is_noted_once(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": ROOT.replace('version = "5.1.0"', "count   = 3")})
    result = scan(tmp_path)
    assert len(result.errors) == 1 and "not resolved" in result.errors[0].message


def test_a_manifest_pointing_outside_the_tree_is_refused(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"main.tf": DOWNLOADED.replace("10.0.0.0/8", "0.0.0.0/0")})
    tree = write_tree(tmp_path / "tree", {
        "main.tf": ROOT + 'module "abs" {\n  source = "git::https://example.invalid/m.git"\n}\n'
                          'module "link" {\n  source = "example/link/aws"\n}\n',
        ".terraform/modules/modules.json": manifest(("sg", "x", "../outside"), ("abs", "y", str(outside)),
                                                    ("link", "z", ".terraform/modules/link")),
    })
    os.symlink(outside, tree / ".terraform" / "modules" / "link")
    result = scan(tree)
    assert not result.findings  # nothing outside the scanned tree was read
    messages = sorted(e.message for e in result.errors)
    assert sum("leaves the scanned root" in m for m in messages) == 3, messages
    assert sum("not resolved (run terraform init)" in m for m in messages) == 3, messages


def test_a_malformed_manifest_is_a_named_error(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": ROOT, ".terraform/modules/modules.json": '{"Modules": {"oops": 1}}'})
    result = scan(tmp_path)
    targets = [e.target for e in result.errors]
    assert ".terraform/modules/modules.json" in targets and "main.tf" in targets
    assert not rule_ids(result)


def test_a_manifest_cannot_hide_another_root_or_loop_on_its_own(tmp_path: Path) -> None:
    open_ssh = DOWNLOADED.replace("10.0.0.0/8", "0.0.0.0/0").split("module ")[0]
    write_tree(tmp_path, {
        "a/main.tf": 'module "x" {\n  source = "example/x/aws"\n}\nmodule "self" {\n  source = "example/s/aws"\n}\n',
        "a/.terraform/modules/modules.json": manifest(("x", "example/x/aws", "../b"), ("self", "example/s/aws", ".")),
        "b/main.tf": open_ssh,
    })
    result = scan(tmp_path)
    # b is still judged as its own root (and as a's module x, which is what a would deploy); the loop is refused
    assert hits(result) == {("iac.tf.sg_world_ssh", "b/main.tf", 5)}
    assert sorted(f.location["resource"] for f in result.findings) == ["aws_security_group.this",
                                                                      "module.x.aws_security_group.this"]
    assert any("Dir is the root module itself" in e.message for e in result.errors)
