"""Dashboard render time: the overview and the findings pages over 100,000 findings in PostgreSQL.

Fills a fresh store exactly as `benchmarks/server/api.py` does (its `fill`: real rule ids,
severities and categories from the catalogue, 10,000 service targets, 90% open, each seen by one
of 20 scans), moves the timestamps so the last 30 days end today (the overview's new/fixed chart
reads them), adds suppressions (200 single findings and a rule glob), starts `cloudward server
--jobs 0` as a user would, and times whole pages over HTTP with a keep-alive client:

- overview: every aggregate of `/` (chain, severities, categories, 30-day trend, top rules and
  targets, recent scans), rendered to HTML; once after a change to the store before every view (a
  suppression through the API, untimed), so the aggregates are computed, and once unchanged
- findings, first page: `/findings` (50 open findings, with the total the filter matches)
- findings by target: a substring of the target name, whose total needs a COUNT in SQL
- findings by chain link: the Redis link of the attack chain, critical only
- finding detail: one finding with its scan history and triage entries
- rules catalogue: every rule with its open-finding count

Before the pages, the overview's queries are run once in-process under EXPLAIN (ANALYZE, BUFFERS):
the pages of PostgreSQL's buffers they touch and the scan each does are a measure of their cost
that the machine's load does not change (timings on a shared machine swing by 2-4x).

Prints p50/p95/p99 per page and the overview's p95 against its goal (well under a second: 1 s is
the ceiling, not the aim), and writes the `server-dashboard` section of docs/BENCHMARKS.md. There
is no peer tool: the goal is the number.

    .venv/bin/python benchmarks/server/dashboard.py [--findings 100000] [--requests 100]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, today, write_section  # noqa: E402
from benchmarks.server.api import fill, percentile, serve  # noqa: E402
from tests.harness.services import start_postgres  # noqa: E402

GOAL_MS = 1000.0
FILL_NOW = datetime(2026, 11, 1, tzinfo=UTC)  # the moment api.py's fill measures its timestamps from


def age_to_today(url: str) -> None:
    """Shift every timestamp the fill wrote so that its 'now' becomes this moment."""
    from sqlalchemy import create_engine, text

    shift = datetime.now(UTC) - FILL_NOW
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE findings SET first_seen = first_seen + :s, last_seen = last_seen + :s, "
                              "fixed_at = fixed_at + :s"), {"s": shift})
            conn.execute(text("UPDATE scans SET started = started + :s, finished = finished + :s, "
                              "recorded = recorded + :s"), {"s": shift})
        # what autovacuum does to a live store soon after a bulk change: statistics, and the
        # visibility map that lets the overview's index-only scans skip the table
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


def suppress_some(url: str, count: int) -> str:
    """`count` single-finding suppressions and one rule glob; returns a fingerprint to open."""
    from sqlalchemy import select

    from cloudward.store import Store
    from cloudward.store.models import FindingRow

    store = Store.open(url)
    try:
        with store.engine.connect() as conn:
            fingerprints = list(conn.scalars(select(FindingRow.fingerprint).where(FindingRow.status == "open")
                                             .order_by(FindingRow.fingerprint).limit(count + 1)))
        for fingerprint in fingerprints[1:]:
            store.suppress(fingerprint, reason="benchmark: accepted risk", author="bench")
        store.suppress(rule_id="host.fim.*", reason="benchmark: FIM noise on build hosts", author="bench")
        return fingerprints[0]
    finally:
        store.close()


def overview_reads(url: str) -> tuple[int, list[str]]:
    """What computing the overview costs PostgreSQL whatever the machine's load: the shared
    buffers (8 kB pages) its GROUP BY statements touch, from EXPLAIN (ANALYZE, BUFFERS), and the
    scan each does of the findings table (an index by name, or the table itself)."""
    from sqlalchemy import event

    from cloudward.server.dashboard import aggregates
    from cloudward.server.db import ServerDB

    db = ServerDB.open(url)
    statements: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "GROUP BY" in statement and "FROM findings" in statement:
            statements.append((statement, parameters))

    try:
        event.listen(db.engine, "before_cursor_execute", grab)
        aggregates._compute(db, db.clock())
        event.remove(db.engine, "before_cursor_execute", grab)
        pages, scans = 0, []
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            for statement, parameters in statements:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                plan = [row[0] for row in cursor.fetchall()]
                top = next((line for line in plan if "Buffers:" in line), "")
                pages += sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", top))
                found = re.search(r"(Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan) (?:using |on )(\w+)",
                                  "\n".join(plan))
                scans.append(f"{found.group(1)} {found.group(2)}" if found else "?")
            raw.rollback()
        finally:
            raw.close()
        return pages, sorted(scans)  # the passes run at once: their statements come in any order
    finally:
        db.close()


def time_page(client: Any, path: str, requests: int, before: Any = None) -> list[float]:
    """Client-side milliseconds per request; `before(i)` runs ahead of request i, untimed."""
    for _ in range(5):  # warm the server's and PostgreSQL's caches
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    samples = []
    for i in range(requests):
        if before is not None:
            before(i)
        began = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text[:300]
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--suppressions", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = parser.parse_args()

    import httpx

    from cloudward.server.dashboard import chain

    redis_link = next(link.index for link in chain.links() if link.title == "unauthenticated Redis")
    with start_postgres(auth="trust") as postgres:
        url = postgres.sqlalchemy_url
        began = time.perf_counter()
        stats = fill(url, args.findings)
        age_to_today(url)
        one = suppress_some(url, args.suppressions)
        print(f"filled {stats['findings']:,} findings and {args.suppressions} suppressions in "
              f"{time.perf_counter() - began:.0f}s")
        pages = {
            "overview `/`, the store changed before each view (aggregates computed)": "/",
            "overview `/`, unchanged store (aggregates from the cache)": "/",
            "findings, first page `/findings`": "/findings",
            "findings by chain link (Redis), critical": f"/findings?link={redis_link}&severity=critical",
            "findings by target substring (total counted in SQL)": "/findings?target=10.1.",
            "finding detail": f"/findings/{one}",
            "rules catalogue `/rules`": "/rules",
        }
        cold = next(iter(pages))
        pages_read, plans = overview_reads(url)
        print(f"overview queries: {pages_read:,} buffers touched ({pages_read * 8 / 1024:.1f} MB); "
              + "; ".join(plans))
        load_before = os.getloadavg()[0]
        with serve(url) as (base, headers), \
                httpx.Client(base_url=base, headers=headers, trust_env=False, timeout=60) as client:
            overview = client.get("/").text
            shown_total = re.search(r'Open findings</span><span class="kpi-value">([\d,]+)<', overview)
            listed = client.get("/api/v1/findings", params={"limit": 500}).json()["items"]
            victims = [f["fingerprint"] for f in listed]

            def change(i: int) -> None:  # a suppression changes what the overview counts
                answer = client.put(f"/api/v1/findings/{victims[i % len(victims)]}/suppression",
                                    json={"reason": f"benchmark change {i}"})
                assert answer.status_code == 200, answer.text

            results = {}
            order = list(pages.items())
            random.Random(5).shuffle(order)
            for name, path in order:
                results[name] = time_page(client, path, args.requests, before=change if name == cold else None)

    load_after = os.getloadavg()[0]
    rows = []
    for name in pages:
        samples = results[name]
        rows.append((name, statistics.median(samples), percentile(samples, 95), percentile(samples, 99)))
        print(f"{name}: p50 {rows[-1][1]:.1f} ms, p95 {rows[-1][2]:.1f} ms, p99 {rows[-1][3]:.1f} ms")
    p95 = rows[0][2]  # the overview when it has to compute: the number the goal is about
    open_shown = shown_total.group(1) if shown_total else "?"
    print(f"overview p95 {p95:.1f} ms = {p95 / GOAL_MS:.2f}x the {GOAL_MS:.0f} ms ceiling "
          f"({open_shown} open findings on it)")
    if args.no_write:
        return 0
    plan_list = "; ".join(f"`{p}`" for p in plans)
    table = "\n".join(f"| {name} | {p50:.1f} | {p95_:.1f} | {p99:.1f} |" for name, p50, p95_, p99 in rows)
    write_section("server-dashboard", f"""## Dashboard render time: pages over 100,000 findings in PostgreSQL

`benchmarks/server/dashboard.py`, {today()}, {machine()}. PostgreSQL 15 (harness, loopback, default
settings), {stats['findings']:,} findings filled as for the API benchmark (timestamps moved so the
last 30 days end today), {args.suppressions} single-finding suppressions and one rule-glob
suppression; the overview showed {open_shown} open, unsuppressed findings. `cloudward server --jobs 0`
(one uvicorn worker), {args.requests} sequential requests per page over one keep-alive HTTP connection
after 5 warm-up requests, pages in shuffled order; client-side time, so it includes authentication,
every query, Jinja rendering and the HTML transfer. Other work shared the machine's two cores: the
1-minute load average was {load_before:.1f} when the timed requests began and {load_after:.1f} when
they ended.

| page | p50 ms | p95 ms | p99 ms |
|---|---|---|---|
{table}

Goal: the overview well under a second; measured p95 {p95:.1f} ms when its aggregates are computed
({p95 / GOAL_MS:.2f}x the 1 s ceiling). They are GROUP BYs in PostgreSQL run at once on their own
connections (open findings by rule, severity and category, folded into the attack chain's links in
Python; new and fixed per day; by target), each a scan of a narrow index made for it
(migration 0004: partial indexes on the open findings, the trend's timestamps with rule id and
fingerprint), not of the findings table; the store was vacuumed after the fill, as autovacuum
would. Computing them touches {pages_read:,} buffers ({pages_read * 8 / 1024:.1f} MB), a measure the
machine's load does not change (before migration 0004 they were table scans touching 86,502
buffers, 676 MB, on the same fill); the plans: {plan_list}. While no scan is recorded and no
suppression changes (checked on every view, at most a minute old), the overview reuses them, and
so do the findings table's totals for filters by severity, category, rule and chain link; a target
filter counts in SQL. No page loads findings it does not show.
""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
