"""`cloudward findings ...` end to end: CliRunner for behaviour, the installed entry point (a
subprocess) for exit codes and import cost. Every test points CLOUDWARD_DATA_DIR / CLOUDWARD_DB_URL
at temporary locations and CLOUDWARD_CONFIG at a missing file, so the user's real store and
config are never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cloudward.cli.app import app
from cloudward.core.errors import UsageError
from cloudward.core.finding import Finding, Target
from cloudward.store import Store
from tests.store._support import exposure, fresh_database, scan

CLOUDWARD = Path(sys.executable).parent / "cloudward"

REDIS = exposure("10.0.0.1", 6379)
DOCKER = exposure("10.0.0.2", 2375, rule="docker.api_unauthenticated", severity="critical")
SSH = exposure("10.0.0.3", 22, rule="ssh.password_authentication_enabled", severity="medium")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "CLOUDWARD_DATA_DIR": str(tmp_path / "data"),
        "CLOUDWARD_DB_URL": "",
        "CLOUDWARD_CONFIG": str(tmp_path / "no-such-cloudward.toml"),
        "COLUMNS": "200",
    }


@pytest.fixture
def seeded(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Two exposure scans: redis + docker + ssh, then redis + ssh (docker fixed)."""
    with Store.open(f"sqlite:///{env['CLOUDWARD_DATA_DIR']}/cloudward.db") as store:
        store.record_scan(scan([REDIS, DOCKER, SSH], hours=0))
        store.record_scan(scan([REDIS, SSH], hours=1))
    yield env


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, ["findings", *args], env=env)


def cli_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = cli(env, *args, "--format", "json")
    assert result.exit_code == 0, (result.output, result.exception)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLOUDWARD), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_list_json_is_the_v1_contract_with_store_keys(seeded: dict[str, str]) -> None:
    document = cli_json(seeded, "list")
    assert document["schema"] == "cloudward/v1"
    assert document["tool"]["name"] == "cloudward"
    assert set(document["scan"]) >= {"id", "started", "finished", "targets", "errors"}
    assert [f["rule_id"] for f in document["findings"]] == [
        "redis.unauthenticated", "ssh.password_authentication_enabled"]
    first = document["findings"][0]
    assert first["severity"] == "high" and first["category"] == "exposure"
    assert first["target"] == {"kind": "service", "name": "10.0.0.1:6379"}
    assert first["location"]["port"] == 6379
    assert first["status"] == "open" and first["suppressed"] is False
    assert first["first_seen"] and first["last_seen"] and first["fingerprint"] == REDIS.fingerprint
    assert "key" not in first


def test_list_filters(seeded: dict[str, str]) -> None:
    def rules(*args: str) -> list[str]:
        return [f["rule_id"] for f in cli_json(seeded, "list", *args)["findings"]]

    assert rules("--severity", "high") == ["redis.unauthenticated"]
    assert rules("--status", "all", "--severity", "critical") == ["docker.api_unauthenticated"]
    assert rules("--status", "fixed") == ["docker.api_unauthenticated"]
    assert rules("--rule", "ssh.*") == ["ssh.password_authentication_enabled"]
    assert rules("--target", "10.0.0.3") == ["ssh.password_authentication_enabled"]
    assert rules("--category", "secret") == []
    latest = cli_json(seeded, "scans")["scans"][0]["id"]
    scoped = cli_json(seeded, "list", "--scan", latest[:8])
    assert scoped["scan"]["id"] == latest and len(scoped["findings"]) == 2


def test_list_table(seeded: dict[str, str]) -> None:
    result = cli(seeded, "list", "--format", "table")
    assert result.exit_code == 0
    assert "redis.unauthenticated" in result.stdout and REDIS.fingerprint[:12] in result.stdout
    assert "docker.api_unauthenticated" not in result.stdout
    assert "2 findings: 0 critical, 1 high, 1 medium" in result.stdout


def test_table_output_escapes_hostile_text(env: dict[str, str]) -> None:
    hostile = Finding(rule_id="redis.unauthenticated", title="\x1b[2Jgotcha", severity="high",
                      category="exposure", target=Target(kind="service", name="10.0.0.9:6379\x1b[31m"),
                      evidence={"b": "\x1b]0;x\x07"})
    with Store.open(f"sqlite:///{env['CLOUDWARD_DATA_DIR']}/cloudward.db") as store:
        store.record_scan(scan([hostile], hours=0))
    for args in (("list", "--format", "table"), ("show", hostile.fingerprint[:8], "--format", "table")):
        result = cli(env, *args)
        assert result.exit_code == 0
        assert "\x1b" not in result.stdout and "\\x1b" in result.stdout


def test_show_by_prefix(seeded: dict[str, str]) -> None:
    result = cli(seeded, "show", REDIS.fingerprint[:7], "--format", "table")
    assert result.exit_code == 0, result.output
    for text in (REDIS.fingerprint, "redis.unauthenticated", "service:10.0.0.1:6379", "Seen by 2 scans",
                 "Require authentication.", "T1190"):
        assert text in result.stdout
    document = cli_json(seeded, "show", REDIS.fingerprint[:7])
    assert document["finding"]["fingerprint"] == REDIS.fingerprint and len(document["scans"]) == 2


def test_unknown_or_ambiguous_fingerprints(seeded: dict[str, str]) -> None:
    result = cli(seeded, "show", "zz")
    assert isinstance(result.exception, UsageError)
    prefixes = [f.fingerprint for f in (REDIS, DOCKER, SSH)]
    unused = next(c for c in "0123456789abcdef" if not any(p.startswith(c) for p in prefixes))
    assert "no finding with fingerprint" in str(cli(seeded, "show", unused).exception)


def test_diff_json_and_table(seeded: dict[str, str]) -> None:
    document = cli_json(seeded, "diff")
    assert [f["rule_id"] for f in document["fixed"]] == ["docker.api_unauthenticated"]
    assert document["new"] == [] and len(document["still_open"]) == 2
    scans = cli_json(seeded, "scans")["scans"]
    assert document["diff"]["from"]["id"] == scans[1]["id"] and document["diff"]["to"]["id"] == scans[0]["id"]
    reverse = cli_json(seeded, "diff", "--from", scans[0]["id"], "--to", scans[1]["id"])
    assert [f["rule_id"] for f in reverse["new"]] == ["docker.api_unauthenticated"]
    table = cli(seeded, "diff", "--format", "table")
    assert table.exit_code == 0
    assert "Fixed (1)" in table.stdout and "0 new, 1 fixed, 2 still open" in table.stdout


def test_suppress_expire_and_unsuppress(seeded: dict[str, str]) -> None:
    missing_reason = cli(seeded, "suppress", REDIS.fingerprint[:8])
    assert missing_reason.exit_code == 2
    done = cli(seeded, "suppress", REDIS.fingerprint[:8], "--reason", "isolated lab", "--expires", "30d",
               "--author", "alice")
    assert done.exit_code == 0, done.output
    assert "suppressed " + REDIS.fingerprint in done.stdout and "alice" in done.stdout
    listed = cli_json(seeded, "list")
    assert REDIS.fingerprint not in [f["fingerprint"] for f in listed["findings"]]
    assert listed["scan"]["stats"]["suppressed_hidden"] == 1
    shown = cli_json(seeded, "list", "--include-suppressed")
    [marked] = [f for f in shown["findings"] if f["fingerprint"] == REDIS.fingerprint]
    assert marked["suppressed"] is True and marked["suppression"]["reason"] == "isolated lab"
    assert marked["suppression"]["expires"] is not None
    table = cli(seeded, "list", "--format", "table").stdout
    assert "1 finding:" in table and "1 suppressed hidden" in table
    [entry] = cli_json(seeded, "suppressions")["suppressions"]
    assert entry["author"] == "alice"
    assert cli(seeded, "unsuppress", REDIS.fingerprint).exit_code == 0
    assert len(cli_json(seeded, "list")["findings"]) == 2
    assert isinstance(cli(seeded, "unsuppress", REDIS.fingerprint).exception, UsageError)


def test_suppress_a_rule_and_default_author(seeded: dict[str, str]) -> None:
    env = {**seeded, "USER": "carol"}
    done = cli(env, "suppress", "--rule", "ssh.*", "--target", "10.0.0.3:*", "--reason", "bastion")
    assert done.exit_code == 0, done.output
    assert [f["rule_id"] for f in cli_json(env, "list")["findings"]] == ["redis.unauthenticated"]
    assert cli_json(env, "suppressions")["suppressions"][0]["author"] == "carol"
    past = cli(env, "suppress", REDIS.fingerprint, "--reason", "x", "--expires", "2001-01-01")
    assert isinstance(past.exception, UsageError)


def test_scans_table_and_json(seeded: dict[str, str]) -> None:
    scans = cli_json(seeded, "scans")["scans"]
    assert [s["finding_count"] for s in scans] == [2, 3]
    assert all(s["kind"] == "exposure" and s["status"] == "completed" for s in scans)
    table = cli(seeded, "scans", "--format", "table")
    assert table.exit_code == 0 and scans[0]["id"][:12] in table.stdout and "10.0.0.0/24" in table.stdout


def test_empty_store(env: dict[str, str]) -> None:
    assert cli_json(env, "list")["findings"] == []
    assert "No findings." in cli(env, "list", "--format", "table").stdout
    assert "No scans recorded yet." in cli(env, "scans", "--format", "table").stdout
    assert isinstance(cli(env, "diff").exception, UsageError)


def test_bad_options_are_usage_errors(seeded: dict[str, str]) -> None:
    assert isinstance(cli(seeded, "list", "--format", "sarif").exception, UsageError)
    assert isinstance(cli(seeded, "list", "--severity", "urgent").exception, UsageError)
    assert isinstance(cli(seeded, "list", "--status", "closed").exception, UsageError)


def test_exit_codes_through_the_entry_point(seeded: dict[str, str]) -> None:
    ok = run(seeded, "findings", "list", "--format", "json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["schema"] == "cloudward/v1"
    usage = run(seeded, "findings", "show", "nothex!")
    assert usage.returncode == 2 and "not a fingerprint" in usage.stderr


def test_unopenable_store_exits_3_with_the_password_masked(env: dict[str, str]) -> None:
    from tests.harness import free_port

    broken = {**env, "CLOUDWARD_DB_URL": f"postgresql+psycopg://cw:hunter2@127.0.0.1:{free_port()}/cw"}
    result = run(broken, "findings", "list")
    assert result.returncode == 3
    assert "hunter2" not in result.stderr + result.stdout
    assert "cw:***@127.0.0.1" in result.stderr


def test_postgres_through_cloudward_db_url(env: dict[str, str], postgres_trust: Any) -> None:
    with fresh_database(postgres_trust.dsn, postgres_trust.sqlalchemy_url) as url:
        with Store.open(url) as store:
            store.record_scan(scan([REDIS, DOCKER], hours=0))
            store.record_scan(scan([REDIS], hours=1))
        pg_env = {**env, "CLOUDWARD_DB_URL": url}
        result = run(pg_env, "findings", "diff", "--format", "json")
        assert result.returncode == 0, result.stderr
        assert [f["rule_id"] for f in json.loads(result.stdout)["fixed"]] == ["docker.api_unauthenticated"]
        assert cli_json(pg_env, "list")["findings"][0]["fingerprint"] == REDIS.fingerprint
    assert not (Path(env["CLOUDWARD_DATA_DIR"]) / "cloudward.db").exists()


def test_the_command_modules_do_not_import_sqlalchemy() -> None:
    code = ("import sys; import cloudward.cli.app; cloudward.cli.app.build_app(); "
            "bad = [m for m in ('sqlalchemy', 'alembic', 'cloudward.store.repository') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
