"""record_scan: upsert by fingerprint, reopen, mark fixed only within scope and only when the scan
completed, exactness of what each scan saw, and all-or-nothing transactions."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanStatus
from cloudward.store import FindingQuery, Store
from cloudward.store.models import FindingRow, ScanFindingRow, ScanRow
from tests.store._support import at, exposure, scan

ALL = FindingQuery(status="all")


def by_target(store: Store) -> dict[str, str]:
    return {f.finding.target.name: f.status for f in store.list_findings(ALL)}


def test_upsert_keeps_first_seen_and_advances_last_seen(store: Store) -> None:
    first = scan([exposure("10.0.0.1")], hours=0)
    second = scan([exposure("10.0.0.1", severity="critical")], hours=5)
    assert store.record_scan(first).new == 1
    summary = store.record_scan(second)
    assert (summary.new, summary.seen_again, summary.fixed) == (0, 1, 0)
    [item] = store.list_findings(ALL)
    assert item.finding.first_seen == at(0) and item.finding.last_seen == at(5)
    assert item.first_scan_id == first.id and item.last_scan_id == second.id
    # The newest observation's rule text wins (a rule's severity was raised in between).
    assert item.finding.severity.value == "critical"


def test_round_trip_returns_core_findings(store: Store) -> None:
    original = exposure("10.0.0.1")
    store.record_scan(scan([original], hours=0))
    [item] = store.list_findings()
    f = item.finding
    assert isinstance(f, Finding)
    assert f.fingerprint == original.fingerprint
    for name in ("rule_id", "title", "severity", "category", "target", "location", "evidence",
                 "description", "remediation", "references", "attack", "compliance", "tags"):
        assert getattr(f, name) == getattr(original, name), name
    assert f.detected_at == f.last_seen == at(0)
    contract = item.to_contract()
    assert contract["severity"] == "high"
    assert contract["target"] == {"kind": "service", "name": "10.0.0.1:6379"}
    assert contract["status"] == "open" and contract["suppressed"] is False


def test_duplicates_within_one_scan_count_once(store: Store) -> None:
    summary = store.record_scan(scan([exposure("10.0.0.1"), exposure("10.0.0.1")], hours=0))
    assert summary.total == 1
    assert store.get_scan("latest").finding_count == 1


def test_not_seen_again_is_fixed_and_seen_again_reopens(store: Store) -> None:
    store.record_scan(scan([exposure("10.0.0.1"), exposure("10.0.0.2")], hours=0))
    fixing = scan([exposure("10.0.0.1")], hours=1)
    assert store.record_scan(fixing).fixed == 1
    assert by_target(store) == {"10.0.0.1:6379": "open", "10.0.0.2:6379": "fixed"}
    fixed = store.get_finding(exposure("10.0.0.2").fingerprint)
    assert fixed.fixed_at == at(1) and fixed.fixed_scan_id == fixing.id
    summary = store.record_scan(scan([exposure("10.0.0.1"), exposure("10.0.0.2")], hours=2))
    assert summary.reopened == 1
    reopened = store.get_finding(exposure("10.0.0.2").fingerprint)
    assert reopened.status == "open" and reopened.fixed_at is None and reopened.fixed_scan_id is None
    assert reopened.finding.first_seen == at(0)


@pytest.mark.parametrize("status", [ScanStatus.CANCELLED, ScanStatus.FAILED, ScanStatus.RUNNING])
def test_an_incomplete_scan_never_marks_fixed(store: Store, status: ScanStatus) -> None:
    store.record_scan(scan([exposure("10.0.0.1"), exposure("10.0.0.2")], hours=0))
    summary = store.record_scan(scan([exposure("10.0.0.1")], hours=1, status=status))
    assert summary.fixed == 0
    assert set(by_target(store).values()) == {"open"}
    assert store.get_scan("latest").status is status


def test_scope_a_scan_of_host_a_does_not_fix_host_b(store: Store) -> None:
    store.record_scan(scan([exposure("10.0.0.1"), exposure("10.0.0.2")], hours=0,
                           targets=["10.0.0.1", "10.0.0.2"]))
    assert store.record_scan(scan([], hours=1, targets=["10.0.0.1"])).fixed == 1
    assert by_target(store) == {"10.0.0.1:6379": "fixed", "10.0.0.2:6379": "open"}


def test_scope_cidr_range_and_hostname_targets(store: Store) -> None:
    hosts = ["10.0.0.1", "10.0.1.1", "192.168.5.20", "db.internal"]
    store.record_scan(scan([exposure(h) for h in hosts], hours=0, targets=hosts))
    store.record_scan(scan([], hours=1, targets=["10.0.0.0/24", "192.168.5.10-30", "DB.Internal."]))
    assert by_target(store) == {"10.0.0.1:6379": "fixed", "10.0.1.1:6379": "open",
                                "192.168.5.20:6379": "fixed", "db.internal:6379": "fixed"}


def test_scope_respects_the_scanned_ports(store: Store) -> None:
    findings = [exposure("10.0.0.1", 6379), exposure("10.0.0.1", 2375, rule="docker.api_unauthenticated")]
    store.record_scan(scan(findings, hours=0, stats={"ports": [2375, 6379]}))
    store.record_scan(scan([], hours=1, stats={"ports": ["6000-6999"]}))
    assert by_target(store) == {"10.0.0.1:6379": "fixed", "10.0.0.1:2375": "open"}
    store.record_scan(scan([], hours=2, targets=["10.0.0.1:2375"]))
    assert by_target(store) == {"10.0.0.1:6379": "fixed", "10.0.0.1:2375": "fixed"}


def test_a_target_the_scan_failed_on_is_not_marked_fixed(store: Store) -> None:
    store.record_scan(scan([exposure("10.0.0.1"), exposure("10.0.0.2")], hours=0))
    failing = scan([], hours=1)
    failing.add_error("10.0.0.2:6379", "connect timed out", stage="probe")
    assert store.record_scan(failing).fixed == 1
    assert by_target(store) == {"10.0.0.1:6379": "fixed", "10.0.0.2:6379": "open"}


def test_scans_of_another_kind_do_not_fix(store: Store) -> None:
    store.record_scan(scan([exposure("10.0.0.1")], hours=0))
    assert store.record_scan(scan([], hours=1, kind="secrets", targets=["10.0.0.1"])).fixed == 0
    assert by_target(store) == {"10.0.0.1:6379": "open"}


def test_generic_scope_covers_paths_beneath_a_target(store: Store) -> None:
    def secret(path: str) -> Finding:
        return Finding(rule_id="secret.aws_access_key", title="AWS key", severity="critical",
                       category="secret", target=Target(kind="path", name=path),
                       location={"path": path, "line": 3}, key="hmac")

    store.record_scan(scan([secret("/srv/app/.env"), secret("/srv/other/.env"), secret("/home/u/.env")],
                           hours=0, kind="secrets", targets=["/srv", "/home/u"]))
    assert store.record_scan(scan([], hours=1, kind="secrets", targets=["/srv/app/"])).fixed == 1
    assert by_target(store) == {"/srv/app/.env": "fixed", "/srv/other/.env": "open", "/home/u/.env": "open"}


def test_audit_covers_every_finding_it_ever_made(store: Store) -> None:
    store.record_scan(scan([exposure("127.0.0.1", 6379)], hours=0, kind="audit", targets=["127.0.0.1:6379"]))
    # The listener is gone, so it is not among the next audit's targets; it is fixed all the same.
    assert store.record_scan(scan([], hours=1, kind="audit", targets=["127.0.0.1:22"])).fixed == 1


def test_an_older_scan_recorded_late_neither_reopens_nor_fixes(store: Store) -> None:
    store.record_scan(scan([exposure("10.0.0.1")], hours=0))
    store.record_scan(scan([], hours=10))  # fixed at hour 10
    late = store.record_scan(scan([exposure("10.0.0.1"), exposure("10.0.0.2")], hours=5))
    assert late.reopened == 0
    assert by_target(store)["10.0.0.1:6379"] == "fixed"
    store.record_scan(scan([exposure("10.0.0.3")], hours=20))  # fixes 10.0.0.2 (last seen hour 5)
    store.record_scan(scan([exposure("10.0.0.3"), exposure("10.0.0.4")], hours=30))
    store.record_scan(scan([], hours=25))  # older than the hour-30 sighting of .3 and .4
    assert by_target(store)["10.0.0.3:6379"] == "open"
    assert by_target(store)["10.0.0.4:6379"] == "open"


def test_recording_the_same_scan_twice_is_idempotent(store: Store) -> None:
    result = scan([exposure("10.0.0.1"), exposure("10.0.0.2")], hours=0)
    store.record_scan(result)
    result.findings = result.findings[:1]
    store.record_scan(result)
    with store._read() as session:
        assert session.scalar(select(func.count()).select_from(ScanRow)) == 1
        assert session.scalar(select(func.count()).select_from(ScanFindingRow)) == 1
    assert store.get_scan(result.id).finding_count == 1
    # What only the replaced recording saw is gone, not left open with nothing able to close it.
    assert by_target(store) == {"10.0.0.1:6379": "open"}
    # Re-recorded with a finding back, a scan reopens what its earlier recording closed.
    result.findings.append(exposure("10.0.0.2"))
    store.record_scan(result)
    later = scan([exposure("10.0.0.1")], hours=1)
    store.record_scan(later)
    assert by_target(store)["10.0.0.2:6379"] == "fixed"
    later.findings.append(exposure("10.0.0.2"))
    assert store.record_scan(later).reopened == 1
    assert by_target(store)["10.0.0.2:6379"] == "open"


def test_an_interrupted_record_leaves_nothing_behind(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.record_scan(scan([exposure("10.0.0.1")], hours=0))

    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "_mark_fixed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.record_scan(scan([exposure("10.0.0.2")], hours=1))
    monkeypatch.undo()
    assert len(store.list_scans()) == 1
    assert by_target(store) == {"10.0.0.1:6379": "open"}
    with store._read() as session:
        assert session.scalar(select(func.count()).select_from(FindingRow)) == 1
    # ...and the store still works afterwards.
    assert store.record_scan(scan([exposure("10.0.0.2")], hours=2)).fixed == 1


def test_hostile_text_is_stored_on_both_backends(store: Store) -> None:
    nasty = Finding(
        rule_id="redis.unauthenticated", title="banner \x00 with NUL \x1b[2J and \u202e", severity="high",
        category="exposure", target=Target(kind="service", name="10.0.0.1:6379"),
        location={"host": "10.0.0.1", "port": 6379},
        evidence={"banner": "\x00\x01\xff ok", "raw": b"\x00bytes", "nested": {"k": ["\u0000"]}},
    )
    store.record_scan(scan([nasty], hours=0))
    [item] = store.list_findings()
    assert item.finding.title == "banner \\x00 with NUL \x1b[2J and \u202e"
    assert item.finding.evidence["banner"] == "\x00\x01\xff ok"
    assert item.finding.evidence["nested"] == {"k": ["\x00"]}
    assert item.fingerprint == nasty.fingerprint


def test_many_findings_in_one_scan(store: Store) -> None:
    findings = [exposure(f"10.0.{i // 250}.{i % 250 + 1}") for i in range(1200)]
    assert store.record_scan(scan(findings, hours=0, targets=["10.0.0.0/16"])).new == 1200
    assert store.record_scan(scan(findings[:600], hours=1, targets=["10.0.0.0/16"])).fixed == 600
    assert len(store.list_findings()) == 600
