"""Secrets baselines and the pre-commit hook, end to end through the installed entry point.

A baseline must (1) silence known findings even after they move to another line, (2) let new ones
through, (3) list audited false positives as suppressed, (4) keep audit decisions when regenerated,
and (5) never contain a raw secret. Keys are random per test, never real ones.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.secrets.test_cli_scan import aws_file, fake_key_id, fake_secret

CLOUDWARD = Path(sys.executable).parent / "cloudward"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "CLOUDWARD_DB_URL": "",
            "CLOUDWARD_CONFIG": str(tmp_path / "no-such-cloudward.toml"), "COLUMNS": "200"}


def cloudward(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLOUDWARD), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def scan(env: dict[str, str], cwd: Path, *args: str, expect: int = 0) -> dict[str, Any]:
    result = cloudward(env, cwd, "secrets", "scan", ".", "--format", "json", "--no-store", *args)
    assert result.returncode == expect, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_baseline_reports_only_new_findings(work: Path, env: dict[str, str], tmp_path: Path) -> None:
    old_id, old_secret = fake_key_id(), fake_secret()
    (work / "old.ini").write_text(aws_file(old_id, old_secret))
    made = cloudward(env, work, "secrets", "baseline", ".")
    assert made.returncode == 0, made.stderr
    path = work / ".cloudward-secrets.json"
    text = path.read_text()
    data = json.loads(text)
    assert old_id not in text and old_secret not in text
    rules = {r["rule_id"] for r in data["results"]}
    assert {"secret.aws_access_key_id", "secret.aws_secret_access_key"} <= rules
    assert all(r["audit"]["decision"] == "unaudited" and "*" in r["masked"] for r in data["results"])
    assert {r["origin"] for r in data["results"]} == {"old.ini"}

    # Known secrets moved down the file stay known; a new one is reported.
    (work / "old.ini").write_text("# moved\n\n" + aws_file(old_id, old_secret))
    assert scan(env, work, "--baseline", str(path), "--fail-on", "low")["findings"] == []
    new_id = fake_key_id()
    (work / "new.ini").write_text(aws_file(new_id))
    document = scan(env, work, "--baseline", str(path), "--fail-on", "low", expect=1)
    assert [f["target"]["name"] for f in document["findings"]] == ["new.ini"]
    assert document["scan"]["stats"]["baseline"]["known"] == 2
    assert new_id not in json.dumps(document)

    # The baseline is portable: another installation key (another machine) gives the same answer.
    other = {**env, "CLOUDWARD_DATA_DIR": str(tmp_path / "other-data")}
    (work / "new.ini").unlink()
    assert scan(other, work, "--baseline", str(path))["findings"] == []


def test_false_positives_are_suppressed_and_decisions_survive_regeneration(work: Path, env: dict[str, str]) -> None:
    (work / "app.ini").write_text(aws_file(fake_key_id(), fake_secret()))
    path = work / "baseline.json"
    assert cloudward(env, work, "secrets", "baseline", ".", "-o", str(path)).returncode == 0
    data = json.loads(path.read_text())
    for entry in data["results"]:
        entry["audit"] = {"decision": "false_positive", "by": "alice", "at": "2026-01-01T00:00:00Z"}
    path.write_text(json.dumps(data))

    document = scan(env, work, "--baseline", str(path))
    assert document["findings"] == []
    suppressed = [i for i in document["inventory"] if i["kind"] == "suppressed_secret"]
    assert len(suppressed) == 2 and all(i["audited_by"] == "alice" for i in suppressed)
    assert document["scan"]["stats"]["baseline"]["suppressed"] == 2

    (work / "later.ini").write_text(aws_file(fake_key_id()))
    assert cloudward(env, work, "secrets", "baseline", ".", "-o", str(path)).returncode == 0
    regenerated = json.loads(path.read_text())
    decisions = {r["origin"]: r["audit"]["decision"] for r in regenerated["results"]}
    assert decisions == {"app.ini": "false_positive", "later.ini": "unaudited"}
    assert regenerated["salt"] == data["salt"]


def test_audit_command_records_decisions_with_who_and_when(work: Path, env: dict[str, str]) -> None:
    key_id, secret = fake_key_id(), fake_secret()
    (work / "app.ini").write_text(aws_file(key_id, secret))
    assert cloudward(env, work, "secrets", "baseline", ".").returncode == 0
    listing = cloudward(env, work, "secrets", "audit")
    assert listing.returncode == 0, listing.stderr
    assert key_id not in listing.stdout and secret not in listing.stdout
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert len(rows) == 2 and all(row[1] == "unaudited" for row in rows)
    by_rule = {row[2]: row[0] for row in rows}

    decided = cloudward(env, work, "secrets", "audit", by_rule["secret.aws_secret_access_key"][:8],
                        "--false-positive", "--by", "bob@example.org")
    assert decided.returncode == 0, decided.stderr
    entries = {r["rule_id"]: r for r in json.loads((work / ".cloudward-secrets.json").read_text())["results"]}
    secret_entry = entries["secret.aws_secret_access_key"]["audit"]
    assert secret_entry["decision"] == "false_positive" and secret_entry["by"] == "bob@example.org"
    assert secret_entry["at"].startswith("20")
    assert entries["secret.aws_access_key_id"]["audit"]["decision"] == "unaudited"

    document = scan(env, work, "--baseline", ".cloudward-secrets.json")
    assert document["scan"]["stats"]["baseline"] == {"known": 1, "suppressed": 1, "new": 0}

    undone = cloudward(env, work, "secrets", "audit", by_rule["secret.aws_secret_access_key"], "--unaudited")
    assert undone.returncode == 0
    entries = {r["rule_id"]: r for r in json.loads((work / ".cloudward-secrets.json").read_text())["results"]}
    assert entries["secret.aws_secret_access_key"]["audit"] == {"decision": "unaudited", "by": None, "at": None}


@pytest.mark.parametrize(("args", "message"), [
    (("abc", "--false-positive"), "at least 6"),
    (("ffffffffff", "--false-positive"), "no baseline entry"),
    (("ffffffffff",), "say what"),
    (("ffffffffff", "--false-positive", "--true-positive"), "only one"),
    (("--true-positive",), "name the entries"),
])
def test_audit_command_usage_errors(work: Path, env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    (work / "app.ini").write_text(aws_file(fake_key_id(), fake_secret()))
    assert cloudward(env, work, "secrets", "baseline", ".").returncode == 0
    result = cloudward(env, work, "secrets", "audit", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_audit_command_without_a_baseline(work: Path, env: dict[str, str]) -> None:
    result = cloudward(env, work, "secrets", "audit")
    assert result.returncode == 2 and "secrets baseline" in result.stderr


def test_bad_baseline_is_a_usage_error(work: Path, env: dict[str, str]) -> None:
    (work / "nope.json").write_text('{"results": []}')
    result = cloudward(env, work, "secrets", "scan", ".", "--no-store", "--baseline", "nope.json")
    assert result.returncode == 2 and "baseline" in result.stderr


def test_pre_commit_hook_blocks_a_staged_secret(work: Path, env: dict[str, str]) -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "cloudward-secrets"]
    assert hook["language"] == "python" and hook["pass_filenames"] is True
    argv = shlex.split(hook["entry"])
    assert argv[0] == "cloudward"
    argv[0] = str(CLOUDWARD)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args], cwd=work,
                              env=env, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (work / "ok.txt").write_text("hello\n")
    (work / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{fake_key_id()}"\n')
    git("add", "ok.txt")
    staged = git("diff", "--cached", "--name-only").split()
    clean = subprocess.run([*argv, *staged], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr

    git("add", "settings.py")
    staged = git("diff", "--cached", "--name-only").split()
    assert staged == ["ok.txt", "settings.py"]
    blocked = subprocess.run([*argv, *staged], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert blocked.returncode == 1, blocked.stderr
    assert "settings.py" in blocked.stdout
    assert not (Path(env["CLOUDWARD_DATA_DIR"]) / "cloudward.db").exists()  # --no-store honoured
