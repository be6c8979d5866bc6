"""`cloudward rules ...`, `cloudward audit` and `--version`, run as a user would (the installed
entry point in a subprocess), with the data dir in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = shutil.which("cloudward", path=str(Path(sys.executable).parent)) or "cloudward"


def run(*args: str, tmp_path: Path, check_code: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("CLOUDWARD_DB_URL", None)
    done = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    if check_code is not None:
        assert done.returncode == check_code, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_version_is_fast_path(tmp_path):
    done = run("--version", tmp_path=tmp_path)
    assert done.stdout.startswith("cloudward ")


def test_rules_list_show_validate(tmp_path):
    listed = run("rules", "list", "--engine", "exposure", tmp_path=tmp_path)
    assert "redis.unauthenticated" in listed.stdout and "docker.api_unauthenticated" in listed.stdout
    shown = run("rules", "show", "redis.unauthenticated", tmp_path=tmp_path)
    assert "remediation:" in shown.stdout and "T1133" in shown.stdout
    run("rules", "validate", tmp_path=tmp_path)
    missing = run("rules", "show", "no.such_rule", tmp_path=tmp_path, check_code=2)
    assert "no.such_rule" in missing.stderr


def test_broken_user_rule_is_exit_2_naming_the_file(tmp_path):
    rules = tmp_path / "my-rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("id: mine.bad\ntitle: x\n")
    done = run("rules", "validate", "--rules", str(rules), tmp_path=tmp_path, check_code=2)
    assert "bad.yaml" in done.stderr


def test_user_rule_with_unknown_attack_id_fails_validation(tmp_path):
    rules = tmp_path / "my-rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "id: mine.redis_any\ntitle: Any redis\nseverity: low\ncategory: exposure\n"
        "description: Flags every Redis server seen.\nremediation: Nothing to do, it is a demo.\n"
        "attack: [T9999]\nmatch: {engine: exposure, service: redis, when: {fact: version, exists: true}}\n"
    )
    done = run("rules", "validate", "--rules", str(rules), tmp_path=tmp_path, check_code=2)
    assert "T9999" in done.stderr


@pytest.mark.services
def test_audit_finds_a_local_unauthenticated_redis_and_stores_it(tmp_path, redis_server):
    done = run("audit", "--format", "json", "-o", str(tmp_path / "audit.json"), "--fail-on", "critical",
               tmp_path=tmp_path, check_code=1)
    assert "TeamTNT attack chain" in done.stderr
    doc = json.loads((tmp_path / "audit.json").read_text())
    mine = [f for f in doc["findings"] if f["target"]["name"] == f"{redis_server.host}:{redis_server.port}"]
    assert "redis.unauthenticated" in {f["rule_id"] for f in mine}
    listed = run("findings", "list", "--severity", "critical", "--format", "json", tmp_path=tmp_path)
    assert f"{redis_server.host}:{redis_server.port}" in listed.stdout
