"""Queries over the store: list filters, show by prefix, diff, suppressions with expiry, scans."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import pytest

from cloudward.core.errors import UsageError
from cloudward.core.finding import utcnow
from cloudward.core.scan import ScanStatus
from cloudward.core.severity import Severity
from cloudward.store import FindingQuery, Store
from tests.store._support import exposure, scan


def fingerprints(items: list) -> list[str]:  # type: ignore[type-arg]
    return [i.fingerprint for i in items]


@pytest.fixture
def populated(store: Store) -> Store:
    redis = exposure("10.0.0.1", 6379)
    docker = exposure("10.0.0.2", 2375, rule="docker.api_unauthenticated", severity="critical")
    ssh = exposure("10.0.0.3", 22, rule="ssh.password_authentication_enabled", severity="medium")
    http = exposure("10.0.0.4", 80, rule="http.directory_listing", severity="low")
    store.record_scan(scan([redis, docker, ssh, http], hours=0))
    store.record_scan(scan([redis, ssh, http], hours=1))  # docker is fixed
    return store


def test_list_orders_by_severity_and_filters(populated: Store) -> None:
    items = populated.list_findings()
    assert [i.finding.rule_id for i in items] == [
        "redis.unauthenticated", "ssh.password_authentication_enabled", "http.directory_listing"]
    every = populated.list_findings(FindingQuery(status="all"))
    assert [i.finding.severity for i in every] == [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM,
                                                   Severity.LOW]
    assert [i.status for i in populated.list_findings(FindingQuery(status="fixed"))] == ["fixed"]

    def rules(**kwargs: object) -> list[str]:
        return [i.finding.rule_id for i in populated.list_findings(FindingQuery(**kwargs))]  # type: ignore[arg-type]

    assert rules(min_severity=Severity.MEDIUM) == [
        "redis.unauthenticated", "ssh.password_authentication_enabled"]
    assert rules(min_severity=Severity.CRITICAL, status="all") == ["docker.api_unauthenticated"]
    assert rules(rule_id="ssh.*") == ["ssh.password_authentication_enabled"]
    assert rules(rule_id="redis.unauthenticated") == ["redis.unauthenticated"]
    assert rules(rule_id="redis_unauthenticated") == []  # `_` is not a LIKE wildcard here
    assert rules(target="10.0.0.4") == ["http.directory_listing"]
    assert rules(target="100%") == []
    assert rules(category="EXPOSURE") == rules()
    assert rules(category="secret") == []


def test_list_by_scan_shows_what_that_scan_saw(populated: Store) -> None:
    first, second = reversed(populated.list_scans())
    assert len(populated.list_findings(FindingQuery(scan_id=first.id, status="all"))) == 4
    assert len(populated.list_findings(FindingQuery(scan_id=second.id[:8], status="all"))) == 3
    assert len(populated.list_findings(FindingQuery(scan_id="latest", status="all"))) == 3


def test_bad_query_values_are_usage_errors(populated: Store) -> None:
    with pytest.raises(UsageError, match="unknown category 'nope'"):
        populated.list_findings(FindingQuery(category="nope"))
    with pytest.raises(UsageError, match="unknown status"):
        populated.list_findings(FindingQuery(status="closed"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no scan with id"):
        populated.list_findings(FindingQuery(scan_id="doesnotexist"))


def test_show_by_full_fingerprint_and_by_prefix(populated: Store) -> None:
    target = exposure("10.0.0.1", 6379).fingerprint
    assert populated.get_finding(target).fingerprint == target
    assert populated.get_finding(target[:10].upper()).fingerprint == target
    assert [s.id for s in populated.finding_scans(target[:10])] == [s.id for s in populated.list_scans()]


def test_ambiguous_and_unknown_prefixes_are_clear_usage_errors(store: Store) -> None:
    findings = [exposure(f"10.0.1.{i}") for i in range(1, 40)]
    store.record_scan(scan(findings, hours=0))
    groups: dict[str, list[str]] = defaultdict(list)
    for f in findings:
        groups[f.fingerprint[0]].append(f.fingerprint)
    prefix, members = next((p, m) for p, m in groups.items() if len(m) > 1)
    with pytest.raises(UsageError, match=f"prefix '{prefix}' is ambiguous") as caught:
        store.get_finding(prefix)
    assert all(m in str(caught.value) for m in sorted(members)[:5])
    unused = next(c for c in "0123456789abcdef" if c not in groups)
    with pytest.raises(UsageError, match="no finding with fingerprint"):
        store.get_finding(unused)
    with pytest.raises(UsageError, match="not a fingerprint"):
        store.get_finding("%")
    with pytest.raises(UsageError, match="not a fingerprint"):
        store.get_finding("")


def test_diff_new_fixed_still_open_across_three_scans(store: Store) -> None:
    a, b, c, d = (exposure(f"10.0.0.{i}") for i in range(1, 5))
    s1 = scan([a, b], hours=0)
    s2 = scan([b, c], hours=1)
    s3 = scan([c, d], hours=2)
    for s in (s1, s2, s3):
        store.record_scan(s)

    latest = store.diff()  # s3 vs s2
    assert (latest.before.id, latest.after.id) == (s2.id, s3.id)
    assert fingerprints(latest.new) == [d.fingerprint]
    assert fingerprints(latest.fixed) == [b.fingerprint]
    assert fingerprints(latest.still_open) == [c.fingerprint]
    assert latest.not_rechecked == []

    first = store.diff(s1.id, s2.id)
    assert (fingerprints(first.new), fingerprints(first.fixed), fingerprints(first.still_open)) == (
        [c.fingerprint], [a.fingerprint], [b.fingerprint])

    whole = store.diff(before=s1.id[:10])  # to the latest scan of that kind and scope
    assert whole.after.id == s3.id
    assert sorted(fingerprints(whole.new)) == sorted([c.fingerprint, d.fingerprint])
    assert sorted(fingerprints(whole.fixed)) == sorted([a.fingerprint, b.fingerprint])

    document = latest.to_contract("9.9")
    assert document["schema"] == "cloudward/v1"
    assert document["diff"]["from"]["id"] == s2.id and document["diff"]["to"]["id"] == s3.id
    assert [f["fingerprint"] for f in document["fixed"]] == [b.fingerprint]


def test_diff_baseline_is_the_previous_completed_scan_of_the_same_scope(store: Store) -> None:
    a, b = exposure("10.0.0.1"), exposure("10.0.0.2")
    base = scan([a, b], hours=0)
    store.record_scan(base)
    store.record_scan(scan([a], hours=1, status=ScanStatus.CANCELLED))
    store.record_scan(scan([exposure("10.9.0.1")], hours=2, targets=["10.9.0.0/24"]))  # other scope
    latest = scan([a], hours=3)
    store.record_scan(latest)
    result = store.diff()
    assert (result.before.id, result.after.id) == (base.id, latest.id)
    assert fingerprints(result.fixed) == [b.fingerprint]


def test_diff_against_an_incomplete_or_narrower_scan_does_not_claim_fixes(store: Store) -> None:
    a, b = exposure("10.0.0.1"), exposure("10.0.0.2")
    base = scan([a, b], hours=0, targets=["10.0.0.1", "10.0.0.2"])
    store.record_scan(base)
    narrow = scan([], hours=1, targets=["10.0.0.1"])
    store.record_scan(narrow)
    result = store.diff(base.id, narrow.id)
    assert fingerprints(result.fixed) == [a.fingerprint]
    assert fingerprints(result.not_rechecked) == [b.fingerprint]
    cancelled = scan([], hours=2, targets=["10.0.0.1", "10.0.0.2"], status=ScanStatus.CANCELLED)
    store.record_scan(cancelled)
    result = store.diff(base.id, cancelled.id)
    assert result.fixed == [] and len(result.not_rechecked) == 2


def test_diff_without_a_baseline_says_what_to_do(store: Store) -> None:
    with pytest.raises(UsageError, match="holds no scans"):
        store.diff()
    only = scan([exposure("10.0.0.1")], hours=0)
    store.record_scan(only)
    with pytest.raises(UsageError, match="--from"):
        store.diff()
    with pytest.raises(UsageError, match="--to"):
        store.diff(before=only.id)


def test_suppression_hides_and_marks_and_needs_a_reason(populated: Store) -> None:
    redis = exposure("10.0.0.1", 6379).fingerprint
    with pytest.raises(UsageError, match="needs a reason"):
        populated.suppress(redis, reason="  ", author="alice")
    info = populated.suppress(redis[:8], reason="lab host, isolated", author="alice")
    assert (info.fingerprint, info.author, info.expires) == (redis, "alice", None)
    assert redis not in fingerprints(populated.list_findings())
    shown = populated.list_findings(FindingQuery(include_suppressed=True))
    [marked] = [i for i in shown if i.fingerprint == redis]
    assert marked.suppressed and marked.suppression and marked.suppression.reason == "lab host, isolated"
    assert marked.to_contract()["suppression"]["author"] == "alice"
    assert populated.get_finding(redis).suppressed
    # Suppressed findings also leave the diff unless asked for.
    assert redis not in fingerprints(populated.diff().still_open)
    assert redis in fingerprints(populated.diff(include_suppressed=True).still_open)
    # Suppressing again replaces, never duplicates.
    populated.suppress(redis, reason="still isolated", author="bob")
    assert [s.reason for s in populated.list_suppressions()] == ["still isolated"]
    assert populated.unsuppress(redis) == 1
    assert redis in fingerprints(populated.list_findings())
    with pytest.raises(UsageError, match="no suppression for"):
        populated.unsuppress(redis)


def test_expired_suppressions_stop_applying(populated: Store) -> None:
    redis = exposure("10.0.0.1", 6379).fingerprint
    now = utcnow()
    populated.suppress(redis, reason="patch window", author="alice", expires=now + timedelta(days=30))
    assert redis not in fingerprints(populated.list_findings())
    populated.clock = lambda: now + timedelta(days=31)
    assert redis in fingerprints(populated.list_findings())
    assert populated.list_suppressions() == []
    [expired] = populated.list_suppressions(include_expired=True)
    assert expired.expired(populated.clock())
    assert not populated.get_finding(redis).suppressed


def test_rule_suppressions_with_a_target_glob(populated: Store) -> None:
    populated.suppress(rule_id="ssh.*", target_pattern="10.0.0.3:*", reason="bastion", author="ops")
    populated.suppress(rule_id="http.directory_listing", reason="public mirror", author="ops")
    assert [i.finding.rule_id for i in populated.list_findings()] == ["redis.unauthenticated"]
    with pytest.raises(UsageError, match="either one finding"):
        populated.suppress(exposure("10.0.0.1").fingerprint, rule_id="x", reason="r", author="a")
    with pytest.raises(UsageError, match="narrows a rule"):
        populated.suppress(exposure("10.0.0.1").fingerprint, target_pattern="*", reason="r", author="a")
    assert populated.unsuppress(rule_id="ssh.*", target_pattern="10.0.0.3:*") == 1
    assert len(populated.list_findings()) == 2


def test_scans_are_listed_newest_first_and_found_by_prefix(populated: Store) -> None:
    scans = populated.list_scans()
    assert [s.started for s in scans] == sorted((s.started for s in scans), reverse=True)
    assert populated.list_scans(kind="exposure", limit=1)[0].id == scans[0].id
    assert populated.list_scans(kind="secrets") == []
    assert populated.get_scan(scans[1].id[:6]).id == scans[1].id
    assert populated.get_scan("latest").finding_count == 3
    info = scans[0].to_dict()
    assert info["kind"] == "exposure" and info["targets"] == ["10.0.0.0/24"] and info["finding_count"] == 3
