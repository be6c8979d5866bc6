"""The dashboard over HTTP against a real server on both stores: every page for every role, the
login form and its session, CSRF and roles on every change, hostile finding text shown as text,
the findings table's filters and cursor pages, scan diffs, schedules; plus the overview's
aggregates on fresh stores, the attack-chain folding, chart geometry and fuzzed parsers."""

from __future__ import annotations

import html
import itertools
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.server.dashboard import chain, charts
from cloudward.server.dashboard.criteria import Criteria
from cloudward.server.dashboard.forms import safe_next
from tests.server._dashboard import PASSWORD, logged_in, make_user, shown_fingerprints
from tests.server._support import ROLES, ApiServer, store_at
from tests.store._support import scan

_NETS = itertools.count(1)
HOSTILE = '<script>alert("pwned")</script>'


def _finding(net: str, host: int, rule: str, severity: str, category: str = "exposure",
             attack: tuple[str, ...] = (), title: str = "", **extra: Any) -> Finding:
    return Finding(rule_id=rule, title=title or f"{rule} on {net}.{host}", severity=severity, category=category,
                   target=Target(kind="service", name=f"{net}.{host}:6379"), attack=list(attack),
                   location={"host": f"{net}.{host}", "port": 6379}, evidence={"banner": f"seed {host}"},
                   remediation="Require authentication.", **extra)


def _catalogue_of(net: str) -> list[Finding]:
    """Seven findings on distinct links of the chain, and 33 fillers off the chain."""
    named = [
        _finding(net, 1, "redis.unauthenticated", "critical", attack=("T1190",)),
        _finding(net, 2, "docker.api_unauthenticated", "critical", attack=("T1133",)),
        _finding(net, 3, "ssh.password_auth", "medium", attack=("T1110",)),
        _finding(net, 4, "host.cron.miner_entry", "high", "compromise", ("T1053.003", "T1059.004")),
        _finding(net, 5, "secret.aws_access_key", "high", "secret", ("T1552.001",)),
        _finding(net, 6, "appsec.cmdi", "critical", "appsec", ("T1190", "T1059.004")),  # on two links
        _finding(net, 7, "custom.house_rule", "low", "misconfiguration"),  # on no link
    ]
    fillers = [_finding(net, 100 + i, "custom.filler", ("info", "low")[i % 2], "misconfiguration") for i in range(33)]
    return named + fillers


@pytest.fixture
def seeded(api: ApiServer) -> dict[str, Any]:
    """Two scans of a network of its own: the second no longer sees the SSH finding (fixed)."""
    net = f"198.18.{next(_NETS)}"
    first = _catalogue_of(net)
    second = [f for f in first if f.rule_id != "ssh.password_auth"]
    with store_at(api.store_url) as store:
        one = store.record_scan(scan(first, hours=0, targets=[f"{net}.0/24"]))
        two = store.record_scan(scan(second, hours=1, targets=[f"{net}.0/24"]))
    return {"net": net, "findings": first, "first": one.scan_id, "second": two.scan_id,
            "by_rule": {f.rule_id: f for f in first}}


def _page(client: httpx.Client, path: str, **params: Any) -> httpx.Response:
    response = client.get(path, params=params) if params else client.get(path)  # {} would drop path's query
    assert response.headers["content-type"].startswith("text/html"), response.text[:300]
    return response


# --- pages and roles ---------------------------------------------------------------------------


def test_every_page_renders_for_every_role(api: ApiServer, seeded: dict[str, Any]) -> None:
    redis = seeded["by_rule"]["redis.unauthenticated"]
    pages = ["/", "/findings", f"/findings/{redis.fingerprint}", "/scans", "/rules", "/rules/redis.unauthenticated",
             "/schedules", f"/scans/diff?before={seeded['first']}&after={seeded['second']}",
             f"/findings?target={seeded['net']}.&status=all&suppressed=include&sort=target&order=asc"]
    for role in ROLES:
        with api.client(role) as client:
            for path in pages:
                response = client.get(path)
                assert response.status_code == 200, (role, path, response.text[:500])
                assert "script-src 'self'" in response.headers["content-security-policy"]
                assert response.headers["x-frame-options"] == "DENY"
            detail = client.get(f"/findings/{redis.fingerprint}").text
            schedules = client.get("/schedules").text
            triage = role in ("admin", "analyst")
            assert (f'action="/findings/{redis.fingerprint}/suppress"' in detail) is triage
            assert ('action="/schedules"' in schedules) is triage
            assert (">Add a schedule<" in schedules) is triage


def test_overview_shows_the_chain_and_links_to_filtered_tables(api: ApiServer, seeded: dict[str, Any]) -> None:
    with api.client("read-only") as client:
        overview = _page(client, "/").text
        for link in chain.links():
            assert f'href="/findings?link={link.index}"' in overview
            assert html.escape(link.title, quote=False) in overview
        for stage in chain.stage_names():
            assert f'href="/findings?stage={chain.slug(stage)}"' in overview
        redis_link = next(lk for lk in chain.links() if lk.title == "unauthenticated Redis")
        rows = shown_fingerprints(_page(client, "/findings", link=redis_link.index, target=seeded["net"] + ".").text)
        assert rows == [seeded["by_rule"]["redis.unauthenticated"].fingerprint]


def test_static_files_are_served_and_nothing_else(api: ApiServer) -> None:
    with httpx.Client(base_url=api.base, trust_env=False) as anonymous:
        css = anonymous.get("/static/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert "immutable" in css.headers["cache-control"]
        assert anonymous.get("/static/dashboard.js").status_code == 200
        for name in ("app.py", "..%2F..%2Fapp.py", "%2e%2e", "favicon.svg.bak"):
            assert anonymous.get(f"/static/{name}").status_code == 404, name


# --- login, sessions, CSRF ------------------------------------------------------------------------


def test_form_login_comes_back_to_the_page_and_logout_ends_the_session(sqlite_api: ApiServer) -> None:
    api = sqlite_api
    name = make_user(api, "read-only")
    with httpx.Client(base_url=api.base, trust_env=False) as browser:
        away = browser.get("/findings", params={"severity": "high"})
        assert away.status_code == 303 and away.headers["location"] == "/login?next=/findings%3Fseverity%3Dhigh"
        form = browser.get(away.headers["location"])
        assert form.status_code == 200 and 'name="next" value="/findings?severity=high"' in form.text
        wrong = browser.post("/login", data={"name": name, "password": "not the password", "next": "/findings"})
        assert wrong.status_code == 401 and "Wrong name or password." in wrong.text
        assert "cloudward_session" not in browser.cookies and 'value="' + name + '"' in wrong.text
        offsite = browser.post("/login", data={"name": name, "password": PASSWORD, "next": "//evil.example/x"})
        assert offsite.status_code == 303 and offsite.headers["location"] == "/"
        browser.cookies.clear()
        good = browser.post("/login", data={"name": name, "password": PASSWORD, "next": "/findings?severity=high"})
        assert good.status_code == 303 and good.headers["location"] == "/findings?severity=high"
        session = browser.cookies.get("cloudward_session")
        assert session and browser.get("/findings?severity=high").status_code == 200
        assert browser.get("/login").headers["location"] == "/"  # signed in already
        refused = browser.post("/logout")  # no CSRF token: a forged cross-site form
        assert refused.status_code == 403 and "Reload the page" in refused.text
        out = browser.post("/logout", data={"csrf_token": browser.cookies["cloudward_csrf"]})
        assert out.status_code == 303 and out.headers["location"] == "/login?notice=signed-out"
        browser.cookies.set("cloudward_session", session)  # a copy kept by someone: revoked server-side
        expired = browser.get("/")
        assert expired.status_code == 303 and expired.headers["location"] == "/login?notice=expired"


def test_cross_site_login_form_is_refused(sqlite_api: ApiServer) -> None:
    name = make_user(sqlite_api, "read-only")
    with httpx.Client(base_url=sqlite_api.base, trust_env=False) as browser:
        forged = browser.post("/login", data={"name": name, "password": PASSWORD},
                              headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403 and "cloudward_session" not in browser.cookies


def _suppressed(api: ApiServer, fingerprint: str) -> bool:
    with api.client("read-only") as reader:
        return bool(reader.get(f"/api/v1/findings/{fingerprint}").json()["suppressed"])


def test_suppress_needs_csrf_the_analyst_role_and_a_reason(sqlite_api: ApiServer) -> None:
    api = sqlite_api
    net = f"198.19.{next(_NETS)}"
    finding = _finding(net, 1, "redis.unauthenticated", "critical")
    with store_at(api.store_url) as store:
        store.record_scan(scan([finding], hours=0, targets=[f"{net}.1"]))
    action = f"/findings/{finding.fingerprint}/suppress"
    with logged_in(api, "read-only") as (reader, reader_csrf):
        page = reader.get(f"/findings/{finding.fingerprint}").text
        assert action not in page and "needs the analyst role" in page
        refused = reader.post(action, data={"reason": "mine now", "csrf_token": reader_csrf})
        assert refused.status_code == 403 and "analyst role" in refused.text
    with logged_in(api, "analyst") as (analyst, csrf):
        for data, headers in [({"reason": "lab"}, {}), ({"reason": "lab", "csrf_token": "x" * 43}, {}),
                              ({"reason": "lab", "csrf_token": csrf}, {"Origin": "http://evil.example"})]:
            assert analyst.post(action, data=data, headers=headers).status_code == 403
        assert not _suppressed(api, finding.fingerprint)
        blank = analyst.post(action, data={"reason": "  ", "csrf_token": csrf})
        assert blank.status_code == 400 and "give a reason" in blank.text
        past = analyst.post(action, data={"reason": "lab", "expires": "2001-01-01", "csrf_token": csrf})
        assert past.status_code == 400 and "in the past" in past.text and ">lab</textarea>" in past.text
        done = analyst.post(action, data={"reason": "lab box <b>", "expires": "7d", "csrf_token": csrf})
        assert done.status_code == 303 and done.headers["location"].endswith("?notice=suppressed")
        assert _suppressed(api, finding.fingerprint)
        shown = analyst.get(done.headers["location"]).text
        assert "lab box &lt;b&gt;" in shown and "Lift the suppression" in shown
        assert finding.fingerprint not in shown_fingerprints(analyst.get("/findings", params={"target": net}).text)
        only = analyst.get("/findings", params={"target": net, "suppressed": "only"}).text
        assert shown_fingerprints(only) == [finding.fingerprint]
        lifted = analyst.post(f"/findings/{finding.fingerprint}/unsuppress", data={"csrf_token": csrf})
        assert lifted.status_code == 303 and not _suppressed(api, finding.fingerprint)
        again = analyst.post(f"/findings/{finding.fingerprint}/unsuppress", data={"csrf_token": csrf})
        assert again.status_code == 400
    with api.client("admin") as admin:
        entries = admin.get("/api/v1/audit", params={"action": "finding.suppress", "limit": 200}).json()
        assert any(e["target"] == f"finding:{finding.fingerprint}" and e["details"].get("via") == "dashboard"
                   for e in entries)


# --- hostile text ---------------------------------------------------------------------------------


def test_hostile_finding_text_is_shown_as_text(api: ApiServer) -> None:
    net = f"198.20.{next(_NETS)}"
    evil = Finding(rule_id="redis.unauthenticated", title=f"{HOSTILE} in the title", severity="critical",
                   category="exposure",
                   target=Target(kind="service", name=f'{net}.1:6379"><img src=x onerror=alert(1)>'),
                   evidence={"banner": HOSTILE, "</pre><script>x()</script>": {"nested": [HOSTILE]}},
                   location={"path": "<svg onload=alert(1)>"}, description=f"about {HOSTILE}",
                   remediation=f"fix {HOSTILE}", references=["javascript:alert(1)", "https://example.org/ok",
                                                           " JaVaScRiPt:alert(2)"],
                   tags=[HOSTILE], attack=["T1190"])
    with store_at(api.store_url) as store:
        one = store.record_scan(scan([evil], hours=0, targets=[f"{net}.1"]))
        two = store.record_scan(scan([], hours=1, targets=[f"{net}.1"]))
    pages = [f"/findings/{evil.fingerprint}", f"/findings?target={net}&status=all", "/",
             f"/scans/diff?before={one.scan_id}&after={two.scan_id}", f"/findings?target={HOSTILE}&rule={HOSTILE}"]
    with api.client("analyst") as client:
        for path in pages:
            body = client.get(path).text
            assert "<script>alert" not in body and "<img src=x" not in body and "<svg onload" not in body, path
            assert "</pre><script>" not in body and 'href="javascript:' not in body.lower(), path
        detail = client.get(f"/findings/{evil.fingerprint}").text
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in detail  # shown, as text
        assert '<a href="https://example.org/ok"' in detail
        assert "<script" not in detail.replace('<script src="/static/dashboard.js', "")


# --- the findings table -------------------------------------------------------------------------


@pytest.mark.parametrize("params, rules", [
    ({"severity": "critical"}, {"redis.unauthenticated", "docker.api_unauthenticated", "appsec.cmdi"}),
    ({"severity": ["high", "medium"], "status": "all"}, {"host.cron.miner_entry", "secret.aws_access_key",
                                                         "ssh.password_auth"}),
    ({"category": "secret"}, {"secret.aws_access_key"}),
    ({"rule": "*.*unauthenticated"}, {"redis.unauthenticated", "docker.api_unauthenticated"}),
    ({"attack": "t1059"}, {"host.cron.miner_entry", "appsec.cmdi"}),  # a technique finds its sub-techniques
    ({"status": "fixed"}, {"ssh.password_auth"}),
    ({"stage": "execution-and-persistence"}, {"host.cron.miner_entry", "appsec.cmdi"}),
    ({"stage": "credential-access"}, {"secret.aws_access_key"}),
])
def test_filters_narrow_the_table(api: ApiServer, seeded: dict[str, Any], params: dict[str, Any],
                                  rules: set[str]) -> None:
    with api.client("read-only") as client:
        page = _page(client, "/findings", target=seeded["net"] + ".", limit=200, **params)
    assert page.status_code == 200, page.text[:500]
    want = {seeded["by_rule"][r].fingerprint for r in rules}
    assert set(shown_fingerprints(page.text)) == want


def test_chain_link_filter_matches_the_map(api: ApiServer, seeded: dict[str, Any]) -> None:
    with api.client("read-only") as client:
        for link in chain.links():
            page = _page(client, "/findings", target=seeded["net"] + ".", link=link.index, limit=200)
            want = {f.fingerprint for f in seeded["findings"] if f.rule_id != "ssh.password_auth"
                    and any(fnmatchcase(f.rule_id, g) for g in link.globs)}
            assert set(shown_fingerprints(page.text)) == want, link.name


def test_cursor_pages_cover_every_finding_once_in_order(api: ApiServer, seeded: dict[str, Any]) -> None:
    open_now = [f for f in seeded["findings"] if f.rule_id != "ssh.password_auth"]
    with api.client("read-only") as client:
        seen: list[str] = []
        url = f"/findings?target={seeded['net']}.&sort=rule_id&order=asc&limit=25"
        for _ in range(5):
            page = _page(client, url)
            assert f"shown of {len(open_now)}<" in page.text
            seen += shown_fingerprints(page.text)
            nxt = [html.unescape(h) for h in _links(page.text, 'rel="next" href="')]
            if not nxt:
                break
            url = nxt[0]
    assert len(seen) == len(set(seen)) == len(open_now)
    order = {f.fingerprint: (f.rule_id, f.fingerprint) for f in open_now}
    assert [order[s] for s in seen] == sorted(order[s] for s in seen)


@pytest.mark.parametrize("sort, order", [("rule_id", "asc"), ("severity", "desc")])
def test_previous_page_links_walk_back_through_the_same_pages(api: ApiServer, seeded: dict[str, Any], sort: str,
                                                              order: str) -> None:
    with api.client("read-only") as client:
        forward: list[list[str]] = []
        url = f"/findings?target={seeded['net']}.&sort={sort}&order={order}&limit=25"
        while True:
            page = _page(client, url).text
            forward.append(shown_fingerprints(page))
            assert ('rel="prev"' in page) is (len(forward) > 1)  # the first page has nothing before it
            nxt = [html.unescape(h) for h in _links(page, 'rel="next" href="')]
            if not nxt:
                break
            url = nxt[0]
        assert len(forward) == 2  # 39 open findings, 25 a page
        backward = [forward[-1]]
        while True:
            prev = [html.unescape(h) for h in _links(page, 'rel="prev" href="')]
            if not prev:
                break
            assert "dir=prev" in prev[0]
            page = _page(client, prev[0]).text
            backward.append(shown_fingerprints(page))
            assert 'rel="next"' in page  # and forward again from there
    assert backward[::-1] == forward


def _links(text: str, marker: str) -> list[str]:
    out = []
    for part in text.split(marker)[1:]:
        out.append(part.split('"', 1)[0])
    return out


@pytest.mark.parametrize("params, message", [
    ({"severity": "urgent"}, "is not a severity"), ({"attack": "T99"}, "is not a technique id"),
    ({"link": "999"}, "is not a link"), ({"link": "²"}, "is not a link"), ({"stage": "<b>x</b>"}, "is not a stage"),
    ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"), ({"limit": "5000"}, "limit"), ({"sort": "evidence"}, "sort"),
])
def test_bad_filters_say_what_is_wrong(sqlite_api: ApiServer, params: dict[str, str], message: str) -> None:
    with sqlite_api.client("read-only") as client:
        page = _page(client, "/findings", **params)
    assert page.status_code == 400 and message in html.unescape(page.text) and "<b>x</b>" not in page.text


# --- scans and schedules ------------------------------------------------------------------------


def test_scan_diff_page_shows_what_changed(api: ApiServer, seeded: dict[str, Any]) -> None:
    with api.client("read-only") as client:
        scans = _page(client, "/scans").text
        assert seeded["second"][:12] in scans and f'/scans/diff?after={seeded["second"]}' in scans
        diff = _page(client, "/scans/diff", before=seeded["first"], after=seeded["second"]).text
        fixed = diff.split('id="fixed"', 1)[1].split("</details>", 1)[0]
        still = diff.split('id="still_open"', 1)[1].split("</details>", 1)[0]
        assert seeded["by_rule"]["ssh.password_auth"].fingerprint in fixed
        assert seeded["by_rule"]["redis.unauthenticated"].fingerprint in still
        assert "None." in diff.split('id="new"', 1)[1].split("</details>", 1)[0]
        missing = _page(client, "/scans/diff", before="f" * 32)
        assert missing.status_code == 400


def test_schedules_are_added_paused_and_removed_through_forms(sqlite_api: ApiServer) -> None:
    with logged_in(sqlite_api, "analyst") as (analyst, csrf):
        command = f"exposure scan 127.0.0.1 -p {next(_NETS) + 1000}"
        bad = analyst.post("/schedules", data={"command": command, "cron": "every hour", "csrf_token": csrf})
        assert bad.status_code == 400 and "cron expression" in bad.text and command in bad.text
        denied = analyst.post("/schedules", data={"command": "exposure scan 127.0.0.1 -o /etc/x", "cron": "0 * * * *",
                                                   "csrf_token": csrf})
        assert denied.status_code == 400 and "option -o" in denied.text
        made = analyst.post("/schedules", data={"command": command, "cron": "0 * * * *", "csrf_token": csrf})
        assert made.status_code == 303
        with sqlite_api.client("read-only") as reader:
            schedule = next(s for s in reader.get("/api/v1/schedules").json() if s["command"] == command)
            assert analyst.post(f"/schedules/{schedule['id']}/toggle", data={"csrf_token": csrf}).status_code == 303
            assert reader.get(f"/api/v1/schedules/{schedule['id']}").json()["enabled"] is False
            assert analyst.post(f"/schedules/{schedule['id']}/delete").status_code == 403  # no CSRF token
            assert analyst.post(f"/schedules/{schedule['id']}/delete", data={"csrf_token": csrf}).status_code == 303
            assert reader.get(f"/api/v1/schedules/{schedule['id']}").status_code == 404


# --- aggregates on fresh stores -------------------------------------------------------------------


def test_overview_aggregates_count_open_unsuppressed_findings(fresh_db: Any) -> None:
    from cloudward.server.dashboard import aggregates

    now = fresh_db.clock()
    net = "198.51.100"
    findings = _catalogue_of(net)
    day = timedelta(days=1)
    first = ScanResult(kind="exposure", targets=[f"{net}.0/24"], started=now - 3 * day, finished=now - 3 * day,
                       status=ScanStatus.COMPLETED, findings=findings)
    second = ScanResult(kind="exposure", targets=[f"{net}.0/24"], started=now - day, finished=now - day,
                        status=ScanStatus.COMPLETED, findings=[f for f in findings if f.rule_id != "ssh.password_auth"])
    fresh_db.store.record_scan(first)
    fresh_db.store.record_scan(second)
    fresh_db.store.suppress(findings[1].fingerprint, reason="lab", author="t")  # the docker one
    data = aggregates.overview(fresh_db, now)
    counts = {(rule, rank): n for rule, rank, n in data.rule_counts}
    assert ("docker.api_unauthenticated", 4) not in counts and ("ssh.password_auth", 2) not in counts
    assert counts[("redis.unauthenticated", 4)] == 1 and counts[("custom.filler", 0)] == 17
    assert sum(counts.values()) == 40 - 2 and data.suppressed == 1
    assert data.new_by_day == {(now - 3 * day).date(): 39}  # the suppressed one is not counted
    assert data.fixed_by_day == {(now - day).date(): 1}
    view = chain.fold(data.rule_counts)
    stages = {s.name: s.tally for s in view.stages}
    assert stages["Initial access"].total == 2 and stages["Initial access"].worst == "critical"  # redis, appsec
    assert stages["Execution and persistence"].total == 2 and stages["Credential access"].total == 1
    assert stages["Impact"].total == 0 and stages["Impact"].worst is None
    assert view.off_chain.total == 34 and view.off_chain_rules == ["custom.filler", "custom.house_rule"]


def test_overview_cache_follows_every_change_to_the_store(fresh_db: Any) -> None:
    from cloudward.server.dashboard import aggregates

    now = fresh_db.clock()
    findings = _catalogue_of("198.51.101")[:7]
    whole = ["198.51.101.0/24"]
    fresh_db.store.record_scan(ScanResult(kind="exposure", targets=whole, started=now - timedelta(hours=2),
                                          status=ScanStatus.COMPLETED, findings=findings))
    first = aggregates.overview(fresh_db, now)
    assert aggregates.overview(fresh_db, now) is first  # unchanged store: the same numbers, not recomputed
    fresh_db.store.suppress(findings[0].fingerprint, reason="lab", author="t")
    suppressed = aggregates.overview(fresh_db, now)
    assert suppressed.suppressed == 1 and sum(n for *_, n in suppressed.rule_counts) == 6
    fresh_db.store.suppress(findings[0].fingerprint, reason="lab, for a week", author="t",
                            expires=now + timedelta(days=7))  # replaced: still one suppression
    assert aggregates.overview(fresh_db, now) is not suppressed
    fresh_db.store.unsuppress(findings[0].fingerprint)
    assert aggregates.overview(fresh_db, now).suppressed == 0
    fresh_db.store.record_scan(ScanResult(kind="exposure", targets=whole, started=now - timedelta(hours=1),
                                          status=ScanStatus.COMPLETED, findings=findings[1:]))
    rescanned = aggregates.overview(fresh_db, now)
    assert sum(n for *_, n in rescanned.rule_counts) == 6 and rescanned.fixed_by_day == {now.date(): 1}


def test_totals_from_the_cache_match_counting_in_sql(fresh_db: Any) -> None:
    from cloudward.server.dashboard import aggregates, queries

    now = fresh_db.clock()
    findings = _catalogue_of("198.51.102")
    fresh_db.store.record_scan(ScanResult(kind="exposure", targets=["x"], started=now - timedelta(hours=1),
                                          status=ScanStatus.COMPLETED, findings=findings))
    fresh_db.store.suppress(rule_id="custom.fill*", target_pattern="*.10?:6379", reason="noise", author="t")
    cases = [{}, {"severity": "critical"}, {"severity": ["info", "low"]}, {"category": "secret"},
             {"rule": "custom.*"}, {"rule": "[rs]*"}, {"stage": "initial-access", "severity": "critical"},
             {"link": "0"}, {"link": "6", "stage": "execution-and-persistence"}]
    assert aggregates.counted_total(fresh_db, Criteria.parse({}).finding_filter(), []) is None  # cold: no guess
    aggregates.overview(fresh_db, now)
    for params in cases:
        criteria = Criteria.parse(params)
        assert not criteria.errors
        cached = aggregates.counted_total(fresh_db, criteria.finding_filter(), criteria.chain_globs())
        with fresh_db.read() as session:
            counted = queries.findings_page(session, criteria.finding_filter(),
                                            criteria.chain_clauses(fresh_db.dialect), now, sort="severity",
                                            order="desc", limit=25, cursor=None).total
        assert cached == counted, params
    for params in ({"target": "198"}, {"status": "all"}, {"suppressed": "include"}, {"attack": "T1190"}):
        criteria = Criteria.parse(params)
        assert aggregates.counted_total(fresh_db, criteria.finding_filter(), criteria.chain_globs()) is None


def test_chain_has_every_stage_and_folds_a_rule_once_per_stage() -> None:
    links = chain.links()
    names = [s for s in chain.stage_names() if s != chain.AROUND]
    assert names == [s for s in chain.STAGES if s in names]  # in the chain's order
    assert {"Initial access", "Execution and persistence", "Defense evasion", "Credential access",
            "Impact"} <= set(names)
    assert all(lk.stage in chain.STAGES or lk.stage == chain.AROUND for lk in links)
    assert all(link.globs for link in links)
    # a security group open to the world on 2375 is on two initial-access links and the posture one
    view = chain.fold([("aws.ec2.sg_world_docker_api", 4, 3), ("redis.unauthenticated", 4, 2),
                       ("appsec.cmdi", 3, 1), ("nothing.here", 1, 5)])
    by_link = {lk.title: tally.total for stage in view.stages for lk, tally in stage.links}
    assert by_link["exposed Docker Engine API"] == 3 and by_link["other exposed data services"] == 3
    assert by_link["unauthenticated Redis"] == 2 and by_link["cron, systemd, injected keys"] == 1
    stages = {s.name: s.tally for s in view.stages}
    assert stages["Initial access"].total == 3 + 2 + 1  # the security group counts once in its stage
    assert stages["Initial access"].by_severity == {"critical": 5, "high": 1, "medium": 0, "low": 0, "info": 0}
    assert stages[chain.AROUND].total == 3 and stages["Impact"].total == 0
    assert view.off_chain.by_severity["low"] == 5 and view.off_chain_rules == ["nothing.here"]


# --- charts and parsers -------------------------------------------------------------------------


def test_chart_geometry() -> None:
    segments = charts.stack({"critical": 1, "high": 3, "medium": 0, "low": 0, "info": 0}, width=100)
    assert [(s.label, s.x, s.width) for s in segments] == [("critical", 0.0, 25.0), ("high", 25.0, 75.0)]
    bars = charts.bar_chart([("a", 10, "x", "/"), ("b", 5, "x", "/"), ("c", 0, "x", "/")], span=200)
    assert [b.width for b in bars.bars] == [200.0, 100.0, 0]
    today = datetime(2026, 3, 31).date()
    trend = charts.trend({today: 4}, {today - timedelta(days=29): 2, today - timedelta(days=30): 9}, today, days=30)
    assert len(trend.days) == 30 and trend.total_new == 4 and trend.total_fixed == 2 and trend.peak == 4
    assert trend.days[-1].up == trend.mid - 4 and trend.days[0].down == round((trend.mid - 4) / 2, 2)
    assert charts.chevrons([]) == [] and len(charts.chevrons([("a", "a", 1, "high"), ("b", "b", 0, None)])) == 2
    few = charts.columns([("s1", 4, "/", "x"), ("s2", 2, "/", "x")], width=300, height=60, widest=14)
    assert [(c.x, c.width, c.height) for c in few] == [(269.0, 14.0, 58.0), (285.0, 14.0, 29.0)]


_PARAM_NAMES = st.sampled_from(["severity", "category", "target", "rule", "attack", "status", "suppressed", "link",
                                "stage", "scan", "sort", "order", "limit", "cursor", "dir", "other"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_PARAM_NAMES, st.one_of(st.text(max_size=300), st.lists(st.text(max_size=40), max_size=4))))
def test_filter_parser_never_raises_and_keeps_only_valid_values(params: dict[str, Any]) -> None:
    criteria = Criteria.parse(params)
    flt = criteria.finding_filter()  # a valid FindingFilter, always
    assert criteria.status in ("open", "fixed", "all") and criteria.limit in (25, 50, 100, 200)
    assert criteria.link is None or 0 <= criteria.link < len(chain.links())
    assert len(criteria.target) <= 200 and len(criteria.scan) <= 64 and len(criteria.cursor) <= 2048
    assert all(s.value in criteria.severity for s in flt.severity)
    assert not criteria.backwards or (criteria.cursor and str(params.get("dir")).strip() == "prev")  # needs a cursor
    criteria.chain_clauses("sqlite")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=100), st.from_regex(r"[/\\]{1,3}[a-z.]{0,10}(/.*)?", fullmatch=True)))
def test_login_redirect_target_never_leaves_the_site(target: str) -> None:
    chosen = safe_next(target)
    assert chosen.startswith("/") and not chosen.startswith("//") and "\\" not in chosen
    assert not any(ord(c) < 0x20 for c in chosen)
    assert httpx.URL("http://dashboard.test" + chosen).host == "dashboard.test"
