"""The findings API against a real server on both stores, over findings recorded by the store
itself: filters, sort orders, cursor pages that neither repeat nor skip, detail and history,
suppress and unsuppress (with audit entries), diffs, targets and the rules catalogue."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.finding import Finding, Target
from tests.server._support import ApiServer, store_at
from tests.store._support import scan

RULES = ("seed.redis_open", "seed.redis_old", "seed.docker_api", "seed.ssh_password")
SEVERITIES = ("critical", "high", "medium", "low", "info")
ATTACK = (["T1190"], ["T1059.004"], ["T1078", "T1110"], [])
_NETS = itertools.count(20)


def _finding(net: str, i: int) -> Finding:
    return Finding(rule_id=RULES[i % 4], title=f"seeded {i}", severity=SEVERITIES[i % 5],
                   category="exposure" if i % 3 else "misconfiguration",
                   target=Target(kind="service", name=f"{net}.{i // 10}.{i % 10}:6379"),
                   location={"host": f"{net}.{i // 10}.{i % 10}", "port": 6379}, attack=ATTACK[i % 4],
                   evidence={"banner": f"redis {i}"})


@pytest.fixture
def seeded(api: ApiServer) -> dict[str, Any]:
    """37 findings on a network of their own, then a second scan where two are gone and one is new."""
    net = f"10.{next(_NETS)}"  # a network of its own in this test run: no fingerprint is shared
    first = [_finding(net, i) for i in range(37)]
    second = [f for f in first if f.title not in ("seeded 0", "seeded 1")] + [_finding(net, 99)]
    with store_at(api.store_url) as store:
        one = store.record_scan(scan(first, hours=0, targets=[f"{net}.0.0/16"]))
        two = store.record_scan(scan(second, hours=1, targets=[f"{net}.0.0/16"]))
    return {"net": net, "first": one.scan_id, "second": two.scan_id, "findings": first}


def _all_pages(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = client.get("/api/v1/findings", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_cursor_pages_cover_everything_once_in_order(api: ApiServer, seeded: dict[str, Any]) -> None:
    with api.client("read-only") as client:
        items = _all_pages(client, target=seeded["net"] + ".", limit=7)
        assert len(items) == 36 and len({i["fingerprint"] for i in items}) == 36  # 35 still open + 1 new
        rank = {s: n for n, s in enumerate(reversed(SEVERITIES))}
        keys = [(rank[i["severity"]], i["last_seen"], i["fingerprint"]) for i in items]
        assert keys == sorted(keys, reverse=True)
        by_rule = _all_pages(client, target=seeded["net"] + ".", sort="rule_id", order="asc", limit=5)
        expected = sorted((i["rule_id"], i["fingerprint"]) for i in items)
        assert [(i["rule_id"], i["fingerprint"]) for i in by_rule] == expected
        fixed = _all_pages(client, target=seeded["net"] + ".", status="fixed")
        assert sorted(i["title"] for i in fixed) == ["seeded 0", "seeded 1"]
        assert len(_all_pages(client, target=seeded["net"] + ".", status="all", limit=500)) == 38


def test_a_finding_recorded_between_pages_does_not_shift_them(api: ApiServer, seeded: dict[str, Any]) -> None:
    with api.client("read-only") as client:
        params = {"target": seeded["net"] + ".", "sort": "rule_id", "order": "asc", "limit": 10}
        first = client.get("/api/v1/findings", params=params).json()
        with store_at(api.store_url) as store:  # sorts first of all: an offset page would repeat a row
            early = _finding(seeded["net"], 98).model_copy(update={"rule_id": "seed.aaa_first"})
            early = Finding.model_validate({**early.model_dump(), "fingerprint": ""})
            store.record_scan(scan([early], hours=2, targets=[f"{seeded['net']}.9.8"]))
        rest = _all_pages(client, **params, cursor=first["next_cursor"])
        seen = [i["fingerprint"] for i in first["items"] + rest]
        assert len(seen) == len(set(seen)) == 36


@pytest.mark.parametrize("params, expected", [
    ({"min_severity": "high"}, lambda f: f.severity.value in ("critical", "high")),
    ({"severity": "medium,low"}, lambda f: f.severity.value in ("medium", "low")),
    ({"category": "misconfiguration"}, lambda f: f.category.value == "misconfiguration"),
    ({"rule": "seed.redis_*"}, lambda f: f.rule_id.startswith("seed.redis_")),
    ({"rule": "seed.docker_api"}, lambda f: f.rule_id == "seed.docker_api"),
    ({"attack": "T1059"}, lambda f: "T1059.004" in f.attack),
    ({"attack": "T1110"}, lambda f: "T1110" in f.attack),
    ({"min_severity": "high", "category": "exposure", "rule": "seed.*"},
     lambda f: f.severity.value in ("critical", "high") and f.category.value == "exposure"),
])
def test_filters(api: ApiServer, seeded: dict[str, Any], params: dict[str, str], expected: Any) -> None:
    still_open = [f for f in seeded["findings"] if f.title not in ("seeded 0", "seeded 1")]
    with api.client("read-only") as client:
        got = {i["fingerprint"] for i in _all_pages(client, target=seeded["net"] + ".", scan=seeded["first"],
                                                     status="all", **params)}
    want = {f.fingerprint for f in seeded["findings"] if expected(f)}
    assert got == want and want  # each filter keeps something and drops something
    assert len(want) < len(seeded["findings"])
    assert still_open


@pytest.mark.parametrize("params", [{"cursor": "not-a-cursor"}, {"attack": "T99"}, {"severity": "bad"},
                                    {"scan": "0" * 32}, {"limit": "0"}, {"sort": "evidence"}])
def test_bad_parameters_are_client_errors(api: ApiServer, params: dict[str, str]) -> None:
    with api.client("read-only") as client:
        assert client.get("/api/v1/findings", params=params).status_code in (400, 404, 422)


def test_cursor_of_another_sort_is_refused(api: ApiServer, seeded: dict[str, Any]) -> None:
    with api.client("read-only") as client:
        cursor = client.get("/api/v1/findings", params={"limit": 2}).json()["next_cursor"]
        assert cursor
        refused = client.get("/api/v1/findings", params={"cursor": cursor, "sort": "target"})
        assert refused.status_code == 400 and "cursor" in refused.json()["detail"]


def test_detail_history_and_diff(api: ApiServer, seeded: dict[str, Any]) -> None:
    target = seeded["findings"][5]
    with api.client("read-only") as client:
        detail = client.get(f"/api/v1/findings/{target.fingerprint[:10]}").json()
        assert detail["fingerprint"] == target.fingerprint and detail["evidence"] == {"banner": "redis 5"}
        history = client.get(f"/api/v1/findings/{target.fingerprint}/history").json()
        assert [s["id"] for s in history["scans"]] == [seeded["second"], seeded["first"]]
        assert history["first_scan_id"] == seeded["first"] and history["last_scan_id"] == seeded["second"]
        assert client.get("/api/v1/findings/ffffffffffffffffffffffffffffffff").status_code == 404
        diff = client.get("/api/v1/diff", params={"before": seeded["first"], "after": seeded["second"]}).json()
        assert sorted(f["title"] for f in diff["fixed"]) == ["seeded 0", "seeded 1"]
        assert [f["title"] for f in diff["new"]] == ["seeded 99"]
        assert len(diff["still_open"]) == 35


def test_suppress_and_unsuppress_are_audited(api: ApiServer, seeded: dict[str, Any]) -> None:
    fingerprint = seeded["findings"][7].fingerprint
    net = seeded["net"] + "."
    with api.client("analyst") as analyst, api.client("admin") as admin:
        made = analyst.put(f"/api/v1/findings/{fingerprint}/suppression", json={"reason": "lab box", "expires": "30d"})
        assert made.status_code == 200 and made.json()["author"] == "analyst"
        default = {i["fingerprint"] for i in _all_pages(analyst, target=net)}
        only = _all_pages(analyst, target=net, suppressed="only")
        assert fingerprint not in default and [i["fingerprint"] for i in only] == [fingerprint]
        assert only[0]["suppression"]["reason"] == "lab box"
        rule = analyst.post("/api/v1/suppressions", json={"rule_id": "seed.ssh_*", "target_pattern": f"{net}1.*",
                                                          "reason": "jump hosts"})
        assert rule.status_code == 201
        hidden = {i["fingerprint"] for i in _all_pages(analyst, target=net, suppressed="only")}
        expected = {f.fingerprint for f in seeded["findings"][2:] if f.rule_id == "seed.ssh_password"
                    and f.target.name.startswith(f"{net}1.")} | {fingerprint}
        assert hidden == expected
        assert analyst.delete(f"/api/v1/suppressions/{rule.json()['id']}").status_code == 204
        assert analyst.delete(f"/api/v1/findings/{fingerprint}/suppression").status_code == 204
        assert analyst.delete(f"/api/v1/findings/{fingerprint}/suppression").status_code == 404
        assert fingerprint in {i["fingerprint"] for i in _all_pages(analyst, target=net)}
        actions = {(e["action"], e["target"]) for e in admin.get("/api/v1/audit", params={"actor": "analyst"}).json()}
        assert {("finding.suppress", f"finding:{fingerprint}"), ("finding.unsuppress", f"finding:{fingerprint}"),
                ("suppression.create", f"suppression:{rule.json()['id']}")} <= actions


def test_targets_and_rules(api: ApiServer, seeded: dict[str, Any]) -> None:
    with api.client("read-only") as client:
        targets = client.get("/api/v1/targets", params={"search": seeded["net"] + ".0.", "limit": 500}).json()
        assert len(targets) == 8  # .0.0 and .0.1 are fixed
        first = next(t for t in targets if t["name"] == f"{seeded['net']}.0.2:6379")
        assert first["total"] == 1 and first["by_severity"]["medium"] == 1 and first["worst"] == "medium"
        rules = client.get("/api/v1/rules", params={"tag": "teamtnt", "engine": "exposure"}).json()
        assert any(r["id"] == "redis.unauthenticated" for r in rules)
        detail = client.get("/api/v1/rules/redis.unauthenticated").json()
        assert detail["severity"] == "critical" and "T1190" in detail["attack"] and detail["match"]
        assert client.get("/api/v1/rules/no.such_rule").status_code == 404


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3),
                     max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.builds(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="), st.binary(max_size=200)),
    st.builds(lambda doc: base64.urlsafe_b64encode(json.dumps(doc).encode()).decode(), _JSON),
    st.builds(lambda values: base64.urlsafe_b64encode(json.dumps(["severity", "desc", values]).encode()).decode(),
              st.lists(st.integers() | st.text(max_size=30) | st.none(), max_size=4)),
))
def test_cursor_decoder_only_ever_says_usage_error(text: str) -> None:
    from cloudward.core.errors import UsageError
    from cloudward.server.findings import decode_cursor

    try:
        values = decode_cursor(text, "severity", "desc")
    except UsageError:
        return
    assert len(values) == 3 and isinstance(values[0], int)
