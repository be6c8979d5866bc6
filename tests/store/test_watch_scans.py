"""Scans that only watch (`network protect redis`, `network monitor`) complete without closing what
they did not see again: an attack a proxy refused yesterday is not fixed because nobody repeated it."""

from __future__ import annotations

import pytest

from cloudward.core.finding import Finding, Target
from cloudward.store import FindingQuery, Store
from cloudward.store.scope import Subject, covers
from tests.store._support import scan

UPSTREAM = "redis://127.0.0.1:6379"


def refusal(client: str, detail: str) -> Finding:
    """A finding shaped like the Redis proxy's reporter makes them (redis_proxy._Reporter._finding)."""
    return Finding(
        rule_id="network.redis_proxy.config_set_file_location", title="CONFIG SET of Redis's dump location refused",
        severity="critical", category="network", target=Target(kind="service", name=UPSTREAM),
        location={"client": f"{client}:41000", "proxy": "127.0.0.1:6380"},
        evidence={"action": "block", "detail": detail, "client": f"{client}:41000"},
        remediation="Treat the client address as hostile.", references=["https://redis.io/docs/latest/"],
        attack=["T1190"], key=f"{client}|{detail}",
    )


@pytest.mark.parametrize("kind", ["redis-proxy", "network_monitor"])
@pytest.mark.parametrize("targets", [[UPSTREAM], []], ids=["named", "no-targets"])
def test_watch_scopes_cover_nothing(kind: str, targets: list[str]) -> None:
    subject = Subject("service", UPSTREAM, {"client": "203.0.113.7:41000"})
    assert not covers(kind, targets, {}, subject)
    assert covers("some-scan", targets, {}, subject)  # the generic scope would have covered it


def test_a_completed_proxy_scan_closes_nothing(store: Store) -> None:
    first = scan([refusal("203.0.113.7", "config|set dir")], hours=0, targets=[UPSTREAM], kind="redis-proxy")
    second = scan([refusal("198.51.100.2", "config|set dbfilename")], hours=5, targets=[UPSTREAM],
                  kind="redis-proxy")
    store.record_scan(first)
    summary = store.record_scan(second)
    assert (summary.new, summary.fixed) == (1, 0)
    assert sorted(f.status for f in store.list_findings(FindingQuery(status="all"))) == ["open", "open"]
    assert [s.status for s in store.list_scans(kind="redis-proxy")] == ["completed", "completed"]
    diff = store.diff(first.id, second.id)
    assert diff.fixed == [] and [f.finding.evidence["detail"] for f in diff.not_rechecked] == ["config|set dir"]


def test_the_same_scans_under_a_scanning_kind_would_close_it(store: Store) -> None:
    """The control: what keeps the first refusal open above is the proxy's scope, not the findings."""
    store.record_scan(scan([refusal("203.0.113.7", "config|set dir")], hours=0, targets=[UPSTREAM], kind="some-scan"))
    summary = store.record_scan(scan([refusal("198.51.100.2", "config|set dbfilename")], hours=5, targets=[UPSTREAM],
                                     kind="some-scan"))
    assert summary.fixed == 1
