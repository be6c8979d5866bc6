"""`cloudward secrets scan` end to end, through the installed entry point in a subprocess.

Everything is real: files in a temporary directory, a git repository built with the `git` CLI, a
child process holding a key in its environment, stdin fed through a pipe. Every run points
CLOUDWARD_DATA_DIR (installation HMAC key, SQLite store) at a temporary folder. Keys are generated
at random per test, so they are never real credentials and never match anything by accident; the
central promise checked throughout is that the raw value appears in no output, whatever the format.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLOUDWARD = Path(sys.executable).parent / "cloudward"
B32 = string.ascii_uppercase + "234567"
B64 = string.ascii_letters + string.digits + "+/"


def fake_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(B32) for _ in range(16))


def fake_secret() -> str:
    return "".join(secrets.choice(B64) for _ in range(40))


def aws_file(key_id: str, secret: str | None = None) -> str:
    text = f"[default]\naws_access_key_id = {key_id}\n"
    if secret is not None:
        text += f"aws_secret_access_key = {secret}\n"
    return text


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The scanned tree lives under a neutral name: paths such as `tests/` lower severities."""
    root = tmp_path / "proj"
    root.mkdir()
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CLOUDWARD_DATA_DIR": str(tmp_path / "data"),
        "CLOUDWARD_DB_URL": "",
        "CLOUDWARD_CONFIG": str(tmp_path / "no-such-cloudward.toml"),
        "COLUMNS": "200",
    }


def run(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLOUDWARD), "secrets", "scan", *args], env=env, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def scan_json(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None,
              expect: int = 0) -> dict[str, Any]:
    result = run(env, cwd, *args, "--format", "json", "--no-store", stdin=stdin)
    assert result.returncode == expect, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def by_rule(document: dict[str, Any], rule_id: str) -> list[dict[str, Any]]:
    return [f for f in document["findings"] if f["rule_id"] == rule_id]


def test_every_format_masks_the_secret(work: Path, env: dict[str, str], tmp_path: Path) -> None:
    key_id, secret = fake_key_id(), fake_secret()
    (work / "config").mkdir()
    (work / "config" / "aws.ini").write_text(aws_file(key_id, secret))

    outputs: list[str] = []
    reports: dict[str, str] = {}
    for fmt in ("json", "sarif", "table", "html"):
        report = tmp_path / f"report.{fmt}"
        result = run(env, work, ".", "--format", fmt, "-o", str(report))  # stored: the DB is checked too
        assert result.returncode == 0, result.stderr
        reports[fmt] = report.read_text()
        outputs += [result.stdout, result.stderr, reports[fmt]]
        assert report.stat().st_size > 0

    document = json.loads((tmp_path / "report.json").read_text())
    assert document["scan"]["kind"] == "secrets"
    (secret_finding,) = by_rule(document, "secret.aws_secret_access_key")
    (id_finding,) = by_rule(document, "secret.aws_access_key_id")
    assert id_finding["location"]["line"] == 2
    assert secret_finding["location"]["line"] == 3
    assert secret_finding["target"]["name"].endswith("config/aws.ini")
    assert id_finding["evidence"]["masked"].startswith("AKIA") and "*" in id_finding["evidence"]["masked"]
    assert secret_finding["evidence"]["length"] == 40
    assert document["scan"]["stats"]["bytes_read"] > 0 and "bytes_per_second" in document["scan"]["stats"]
    for fmt in ("table", "html", "sarif"):  # each human/tool format names the rule and the file
        assert "aws.ini" in reports[fmt], fmt
    assert "AKIA" in reports["table"] or "aws_access_key_id" in reports["table"]

    store_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    for raw in (key_id, secret):
        for text in outputs:
            assert raw not in text
        assert raw.encode() not in store_bytes


def test_secret_deleted_from_git_history_is_found_with_its_commit(work: Path, env: dict[str, str]) -> None:
    assert shutil.which("git"), "git is needed: run `make test`"
    key_id, secret = fake_key_id(), fake_secret()

    dated = {**env, "GIT_AUTHOR_DATE": "2020-06-01T12:00:00Z", "GIT_COMMITTER_DATE": "2020-06-01T12:00:00Z"}

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args],
                             cwd=work, capture_output=True, text=True, check=True, env=dated)
        return out.stdout.strip()

    git("init", "-q", "-b", "main")
    (work / "README.md").write_text("hello\n")
    (work / "deploy.sh").write_text(f"export AWS_ACCESS_KEY_ID={key_id}\nexport AWS_SECRET_ACCESS_KEY={secret}\n")
    git("add", ".")
    git("commit", "-q", "-m", "add deploy")
    leaked = git("rev-parse", "HEAD")
    git("rm", "-q", "deploy.sh")
    git("commit", "-q", "-m", "remove deploy")

    assert scan_json(env, work, ".")["findings"] == []  # the working tree is clean now

    document = scan_json(env, work, ".", "--git")
    found = by_rule(document, "secret.aws_secret_access_key")
    assert found, document
    location = found[0]["location"]
    assert location["commit"] == leaked
    assert location["path"] == "deploy.sh"
    assert found[0]["target"]["kind"] == "commit"
    assert leaked in found[0]["target"]["name"]
    assert secret not in json.dumps(document) and key_id not in json.dumps(document)

    assert scan_json(env, work, ".", "--git", "--branch", "main")["findings"]
    assert scan_json(env, work, ".", "--git", "--since", "2021-01-01")["findings"] == []


def test_fail_on_gates_by_severity(work: Path, env: dict[str, str]) -> None:
    (work / "creds.txt").write_text(aws_file(fake_key_id()))  # an access key ID alone: high
    assert run(env, work, ".", "--no-store", "--format", "json", "--fail-on", "critical").returncode == 0
    assert run(env, work, ".", "--no-store", "--format", "json", "--fail-on", "high").returncode == 1
    assert run(env, work, ".", "--no-store", "--format", "json", "--fail-on", "low").returncode == 1
    assert run(env, work, ".", "--no-store", "--format", "json").returncode == 0
    bad = run(env, work, ".", "--no-store", "--fail-on", "severe")
    assert bad.returncode == 2 and "--fail-on" in bad.stderr
    clean = work / "clean"
    clean.mkdir()
    (clean / "notes.txt").write_text("nothing to see\n")
    assert run(env, clean, ".", "--no-store", "--format", "json", "--fail-on", "info").returncode == 0


def test_source_errors_are_reported_and_other_findings_kept(work: Path, env: dict[str, str]) -> None:
    key_id, secret = fake_key_id(), fake_secret()
    (work / "good.ini").write_text(aws_file(key_id, secret))
    (work / ".env").write_bytes(b"\x00\x01\x02AWS_SECRET_ACCESS_KEY=" + fake_secret().encode() + b"\x00")
    (work / "huge.log").write_text(aws_file(fake_key_id()) + "x" * 4096)
    (work / "logo.png").write_bytes(b"\x89PNG\x00\x00")  # skipped by name: not an error worth listing
    unreadable = work / "locked.ini"
    unreadable.write_text(aws_file(fake_key_id()))
    unreadable.chmod(0)

    document = scan_json(env, work, ".", "--max-size", "1K")
    errors = {Path(e["target"]).name: e["message"] for e in document["scan"]["errors"]}
    assert "binary" in errors[".env"]
    assert "larger than" in errors["huge.log"]
    assert "logo.png" not in errors
    if os.geteuid() != 0:  # root reads mode-000 files
        assert "unreadable" in errors["locked.ini"]
    assert document["scan"]["status"] == "completed"
    names = {Path(f["target"]["name"]).name for f in document["findings"]}
    assert "good.ini" in names and "huge.log" not in names
    assert document["scan"]["stats"]["skipped"]["too_large"] == 1


def test_missing_path_fails_the_scan(work: Path, env: dict[str, str]) -> None:
    result = run(env, work, "no/such/dir", "--no-store", "--format", "json")
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)["scan"]["errors"]


def test_stdin(work: Path, env: dict[str, str]) -> None:
    key_id, secret = fake_key_id(), fake_secret()
    document = scan_json(env, work, "-", stdin=aws_file(key_id, secret))
    (found,) = by_rule(document, "secret.aws_secret_access_key")
    assert found["target"]["kind"] == "stdin"
    assert found["location"]["line"] == 3
    assert secret not in json.dumps(document)


def test_environ_finds_a_key_in_a_child_process(work: Path, env: dict[str, str]) -> None:
    key_id, secret = fake_key_id(), fake_secret()
    child_env = {"PATH": os.environ.get("PATH", ""), "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=child_env)
    try:
        document = scan_json(env, work, "--environ")
    finally:
        child.kill()
        child.wait()
    mine = [f for f in document["findings"] if f["location"].get("pid") == child.pid]
    rules = {f["rule_id"]: f for f in mine}
    assert "secret.aws_secret_access_key" in rules, mine
    found = rules["secret.aws_secret_access_key"]
    assert found["target"]["kind"] == "process"
    assert found["location"]["variable"] == "AWS_SECRET_ACCESS_KEY"
    assert "variables" not in found["location"]
    assert document["scan"]["targets"] == ["environ"]
    text = json.dumps(document)
    assert secret not in text and key_id not in text


def test_usage_errors(work: Path, env: dict[str, str]) -> None:
    assert run(env, work, ".", "--since", "2020-01-01").returncode == 2
    assert run(env, work, ".", "--max-size", "lots").returncode == 2
    assert run(env, work, ".", "--format", "xml").returncode == 2
