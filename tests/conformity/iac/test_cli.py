"""`cloudward iac scan` end to end: formats, file and line in every report, SARIF valid against the
OASIS schema with a region on each result, --fail-on exit codes, --skip-rule, Dockerfiles judged by
`image lint`'s rules, and the findings store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app

from ...report.test_report_sarif import assert_valid
from .conftest import write_tree

TREE = {
    "infra/main.tf": '''resource "aws_security_group" "web" {
  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
''',
    "k8s/app.yaml": '''apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
    - name: app
      image: app:1
      securityContext: {allowPrivilegeEscalation: true}
''',
    "Dockerfile": "FROM python:3.12-slim\nRUN curl -fsSL https://example.invalid/i.sh | sh\nUSER 10001\n"
                  "HEALTHCHECK CMD true\n",
    "broken.yaml": "a: [\n",
}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["iac", "scan", *args])
    return result.exit_code, result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "repo", TREE)


def test_json_names_every_file_and_line(tree: Path) -> None:
    code, out = run(str(tree), "--no-store", "-f", "json")
    assert code == 0
    doc = json.loads(out)
    found = {(f["rule_id"], f["location"]["path"], f["location"]["line"]) for f in doc["findings"]}
    assert found == {("iac.tf.sg_world_ssh", "infra/main.tf", 2),
                     ("iac.k8s.privilege_escalation_allowed", "k8s/app.yaml", 7),
                     ("dockerfile.download_and_execute", "Dockerfile", 2)}
    assert all(f["target"] == {"kind": "path", "name": f["location"]["path"]} for f in doc["findings"])
    assert [e["target"] for e in doc["scan"]["errors"]] == ["broken.yaml"]
    assert doc["scan"]["kind"] == "iac" and doc["scan"]["stats"]["dockerfile"] == 1


def test_sarif_is_valid_and_annotates_lines(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "iac.sarif"
    code, _ = run(str(tree), "--no-store", "-o", str(out))
    assert code == 0
    log = json.loads(out.read_text())
    assert_valid(log)
    regions = {(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
                r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in log["runs"][0]["results"]}
    assert ("iac.tf.sg_world_ssh", "infra/main.tf", 2) in regions
    assert ("iac.k8s.privilege_escalation_allowed", "k8s/app.yaml", 7) in regions
    notes = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["properties"]["target"] for n in notes] == ["broken.yaml"]


@pytest.mark.parametrize(("threshold", "code"), [("critical", 0), ("high", 1), ("medium", 1)])
def test_fail_on(tree: Path, threshold: str, code: int) -> None:
    assert run(str(tree), "--no-store", "-f", "json", "--fail-on", threshold)[0] == code


def test_skip_rule_and_no_dockerfiles(tree: Path) -> None:
    code, out = run(str(tree), "--no-store", "-f", "json", "--fail-on", "high", "--skip-rule", "iac.tf.sg_world_ssh",
                    "--skip-rule", "dockerfile.download_and_execute")
    assert code == 0
    assert [f["rule_id"] for f in json.loads(out)["findings"]] == ["iac.k8s.privilege_escalation_allowed"]
    code, out = run(str(tree), "--no-store", "-f", "json", "--no-dockerfiles")
    assert "dockerfile.download_and_execute" not in {f["rule_id"] for f in json.loads(out)["findings"]}


def test_unknown_skip_rule_is_a_usage_error(tree: Path) -> None:
    result = CliRunner().invoke(app, ["iac", "scan", str(tree), "--no-store", "--skip-rule", "iac.nope"])
    assert result.exit_code != 0 and "iac.nope" in str(result.exception)


def test_missing_path_exits_3(tmp_path: Path) -> None:
    assert run(str(tmp_path / "none"), "--no-store", "-f", "json")[0] == 3


def test_suppressed_findings_are_in_json_not_in_the_table(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.tf": '# cloudward:skip=iac.tf.rds_public reason: replica in a private subnet\n'
                                     'resource "aws_db_instance" "db" {\n  publicly_accessible = true\n'
                                     '  storage_encrypted = true\n}\n'})
    code, out = run(str(tmp_path), "--no-store", "-f", "json", "--fail-on", "low")
    doc = json.loads(out)
    assert code == 0 and doc["findings"] == []
    assert doc["scan"]["stats"]["suppressed_findings"][0]["rule_id"] == "iac.tf.rds_public"
    code, out = run(str(tmp_path), "--no-store", "-f", "table")
    assert "No findings." in out and "iac.tf.rds_public" not in out


def test_scan_is_recorded_in_the_store(tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "cloudward.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    assert run(str(tree), "--config", str(config), "-f", "json")[0] == 0
    result = CliRunner().invoke(app, ["findings", "list", "--config", str(config), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert "iac.tf.sg_world_ssh" in result.stdout


def test_a_fixed_misconfiguration_is_closed_by_the_next_scan_of_its_root(tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "cloudward.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    other = write_tree(tmp_path / "other", {"main.tf": TREE["infra/main.tf"]})
    assert run(str(tree), "--config", str(config), "-f", "json")[0] == 0
    assert run(str(other), "--config", str(config), "-f", "json")[0] == 0
    (tree / "infra" / "main.tf").write_text(TREE["infra/main.tf"].replace("0.0.0.0/0", "10.0.0.0/8"))
    assert run(str(tree), "--config", str(config), "-f", "json")[0] == 0

    def listed(status: str) -> list[tuple[str, str]]:
        result = CliRunner().invoke(app, ["findings", "list", "--config", str(config), "-f", "json",
                                          "--status", status])
        assert result.exit_code == 0, result.output
        return sorted((f["rule_id"], f["location"]["root"]) for f in json.loads(result.stdout)["findings"]
                      if f["rule_id"] == "iac.tf.sg_world_ssh")

    assert listed("fixed") == [("iac.tf.sg_world_ssh", str(tree))]
    assert listed("open") == [("iac.tf.sg_world_ssh", str(other))]  # the other root was not re-scanned


def test_var_file_and_var_options(tmp_path: Path) -> None:
    write_tree(tmp_path / "tf", {"main.tf": 'variable "public" {\n  default = false\n}\n'
                                           'resource "aws_db_instance" "db" {\n  publicly_accessible = var.public\n'
                                           '  storage_encrypted   = true\n}\n'})
    on = tmp_path / "on.tfvars"
    on.write_text("public = true\n")
    code, out = run(str(tmp_path / "tf"), "--no-store", "-f", "json", "--var-file", str(on))
    assert code == 0 and [f["rule_id"] for f in json.loads(out)["findings"]] == ["iac.tf.rds_public"]
    code, out = run(str(tmp_path / "tf"), "--no-store", "-f", "json", "--var-file", str(on), "--var", "public=false")
    assert code == 0 and json.loads(out)["findings"] == []
    for bad, named in ((["--var", "no-equals-sign"], "no-equals-sign"),
                       (["--var-file", str(tmp_path / "missing.tfvars")], "missing.tfvars")):
        result = CliRunner().invoke(app, ["iac", "scan", str(tmp_path / "tf"), "--no-store", *bad])
        assert result.exit_code != 0 and named in str(result.exception)  # a usage error (exit 2 from main)
