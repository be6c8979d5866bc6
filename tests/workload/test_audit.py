"""The host audit as a whole: collectors isolated from each other, partial runs flagged, the CLI
the way a user runs it against an offline root."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.rules import parse_rule_documents
from cloudward.workload import HostObservation, HostRoot, run_audit
from cloudward.workload.collectors import CollectorSpec, all_collectors
from tests.harness.hostroot import build_clean_root

CLOUDWARD = Path(sys.executable).parent / "cloudward"

DEMO_RULE = """
id: host.demo.seen
title: Demo rule over a demo subject
severity: medium
category: misconfiguration
description: Fires on every demo observation that says so.
remediation: Nothing to do, it is a test rule.
references: [https://example.org/demo]
attack: [T1059.004]
match: {engine: host, subject: demo, when: {fact: bad, equals: true}, evidence: [name]}
"""


def demo_rules():
    return parse_rule_documents(DEMO_RULE, "test")


def good(ctx) -> Iterator[HostObservation]:
    yield HostObservation("demo", {"bad": True, "name": "a"}, path="/etc/a", key="a")
    yield HostObservation("demo", {"bad": False, "name": "b"}, path="/etc/b", key="b")


def breaks_midway(ctx) -> Iterator[HostObservation]:
    yield HostObservation("demo", {"bad": True, "name": "c"}, path="/etc/c", key="c")
    raise RuntimeError("parser met garbage")


def test_a_failing_collector_keeps_its_earlier_findings_and_the_others(tmp_path):
    root = HostRoot(build_clean_root(tmp_path / "root"))
    specs = [CollectorSpec("broken", breaks_midway), CollectorSpec("good", good)]
    result = run_audit(root, demo_rules(), collectors=specs)
    assert sorted(f.evidence["name"] for f in result.findings) == ["a", "c"]
    assert [(e.target, e.stage) for e in result.errors] == [("collector broken", "collect")]
    assert "parser met garbage" in result.errors[0].message
    assert result.stats["partial"] is True
    assert result.stats["collectors"]["good"]["observations"] == 2


def test_findings_carry_root_path_and_a_line_free_identity(tmp_path):
    root = HostRoot(build_clean_root(tmp_path / "root"))
    result = run_audit(root, demo_rules(), collectors=[CollectorSpec("good", good)])
    (finding,) = result.findings
    assert finding.target.kind == "host" and finding.target.name == f"root:{root.path}"
    assert finding.location == {"root": str(root.path), "path": "/etc/a"}
    again = run_audit(root, demo_rules(), collectors=[CollectorSpec("good", good)]).findings[0]
    assert again.fingerprint == finding.fingerprint
    assert result.stats["partial"] is False


def test_live_only_collectors_are_skipped_offline(tmp_path):
    root = HostRoot(build_clean_root(tmp_path / "root"))
    result = run_audit(root, demo_rules(), collectors=[CollectorSpec("live", good, live_only=True)])
    assert result.findings == [] and "live" not in result.stats["collectors"]


def test_only_rejects_unknown_collectors(tmp_path):
    with pytest.raises(ValueError, match="unknown collectors: nope"):
        run_audit(HostRoot(build_clean_root(tmp_path / "root")), [], only=["nope"])


def test_a_directory_that_is_not_a_root_is_said_and_audited(tmp_path):
    result = run_audit(HostRoot(tmp_path), load_all_rules().engine("host"), processes=False)
    assert any(e.stage == "root" and "does not look like the root" in e.message for e in result.errors)
    assert result.status.value == "completed"


def test_every_collector_runs_cleanly_on_a_clean_root(tmp_path):
    """No collector may raise on an ordinary system (that would hide its own findings)."""
    root = HostRoot(build_clean_root(tmp_path / "root"))
    result = run_audit(root, load_all_rules().engine("host"), processes=False)
    assert [e for e in result.errors if e.target.startswith("collector ")] == []
    offline = {s.name for s in all_collectors() if not s.live_only}
    assert offline <= set(result.stats["collectors"])


def cloudward(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "CLOUDWARD_DB_URL": "", "PATH": "/usr/bin:/bin",
           "CLOUDWARD_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "200"}
    return subprocess.run([str(CLOUDWARD), *args], capture_output=True, text=True, timeout=300, env=env, check=False)


def test_cli_host_audit_of_an_offline_root(tmp_path):
    root = build_clean_root(tmp_path / "root")
    done = cloudward(tmp_path, "host", "audit", str(root), "--format", "json", "-o", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["scan"]["kind"] == "host" and document["scan"]["status"] == "completed"
    assert not [f for f in document["findings"] if f["severity"] == "critical"]
    assert {i["kind"] for i in document["inventory"]} >= {"host"}
    listed = cloudward(tmp_path, "findings", "scans", "--format", "json")
    assert listed.returncode == 0 and "host" in listed.stdout


def test_cli_host_audit_usage_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    done = cloudward(tmp_path, "host", "audit", str(tmp_path / "file"), "--no-store")
    assert done.returncode == 2 and "ROOT" in done.stderr
    done = cloudward(tmp_path, "host", "audit", str(tmp_path), "--only", "nope", "--no-store")
    assert done.returncode == 2 and "unknown collectors" in done.stderr


def test_cli_lists_collectors():
    done = subprocess.run([str(CLOUDWARD), "host", "collectors"], capture_output=True, text=True, timeout=60,
                          check=False)
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert done.returncode == 0 and "system" in names
    assert names == sorted(names)
