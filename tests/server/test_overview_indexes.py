"""The overview's aggregates read indexes made for them (migration 0004), and stay right where an
index cannot go: a target name too long for a btree entry is recorded, counted, and ranked.

Which plan PostgreSQL picks on a small table is its own business, so the plan test turns
sequential scans off: if a query's predicates did not match its partial index, the plan would
still be a (penalised) sequential scan, and the test would fail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult, ScanStatus

LONG_NAME = "svc-" + "ü" * 1500 + ":6379"  # 3,000+ bytes in UTF-8: above a btree entry's ~2.7 kB


def _finding(target: str, rule: str, severity: str, n: int = 0) -> Finding:
    return Finding(rule_id=rule, title=f"{rule} {n}", severity=severity, category="exposure",
                   target=Target(kind="service", name=target), location={"n": n}, evidence={"n": n}, key=str(n))


def _record(db: Any, findings: list[Finding], targets: list[str], days_ago: int = 1) -> None:
    now = db.clock()
    began = now - timedelta(days=days_ago)
    db.store.record_scan(ScanResult(kind="exposure", targets=targets, started=began, finished=began,
                                    status=ScanStatus.COMPLETED, findings=findings))


def test_a_target_name_too_long_for_an_index_is_recorded_and_ranked(fresh_db: Any) -> None:
    from cloudward.server.dashboard import aggregates

    short = [_finding(f"10.6.0.{i}:6379", "redis.unauthenticated", "high", i) for i in range(1, 10)]
    long = [_finding(LONG_NAME, "docker.api_unauthenticated", "critical", n) for n in range(3)]
    _record(fresh_db, short + long, ["10.6.0.0/24", LONG_NAME])  # would fail on PostgreSQL were it indexed
    data = aggregates.overview(fresh_db, fresh_db.clock())
    assert [t["name"] for t in data.targets][:1] == [LONG_NAME]  # the worst target, from the long-name pass
    assert data.targets[0]["total"] == 3 and data.targets[0]["by_severity"]["critical"] == 3
    assert len(data.targets) == 8 and all(t["worst"] == "high" and t["total"] == 1 for t in data.targets[1:])
    assert sum(n for _, _, n in data.rule_counts) == 12
    assert sum(data.new_by_day.values()) == 12 and data.fixed_by_day == {}


def test_trend_counts_each_finding_on_the_day_it_came_and_the_day_it_went(fresh_db: Any) -> None:
    from cloudward.server.dashboard import aggregates

    now = fresh_db.clock()
    old = _finding("10.5.0.1:22", "ssh.password_auth", "medium")
    kept = _finding("10.5.0.2:22", "ssh.password_auth", "medium")
    _record(fresh_db, [old, kept], ["10.5.0.0/24"], days_ago=40)  # before the window: not "new" in it
    _record(fresh_db, [kept], ["10.5.0.0/24"], days_ago=2)  # `old` fixed inside the window
    data = aggregates.overview(fresh_db, now)
    assert data.new_by_day == {}
    assert data.fixed_by_day == {(now - timedelta(days=2)).date(): 1}


def test_postgresql_answers_the_overview_from_its_indexes(fresh_db: Any) -> None:
    from cloudward.server.dashboard import aggregates

    if fresh_db.dialect != "postgresql":
        return  # SQLite: the same indexes exist (the migration test compares them); plans are PostgreSQL's here
    _record(fresh_db, [_finding(f"10.4.0.{i}:6379", "redis.unauthenticated", "high", i) for i in range(1, 30)],
            ["10.4.0.0/24"])
    fresh_db.store.suppress(rule_id="host.fim.*", reason="noise", author="t")  # the clauses a real store has
    statements: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "GROUP BY" in statement and "FROM findings" in statement:
            statements.append((statement, parameters))

    event.listen(fresh_db.engine, "before_cursor_execute", grab)
    try:
        aggregates._compute(fresh_db, fresh_db.clock())
    finally:
        event.remove(fresh_db.engine, "before_cursor_execute", grab)
    plans = []
    raw = fresh_db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET enable_seqscan = off")
        for statement, parameters in statements:
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    finally:
        raw.rollback()
        raw.close()
    assert len(plans) == 5  # by rule; new and fixed per day; short and long target names
    expected = {"ix_findings_open_rule", "ix_findings_first_seen", "ix_findings_fixed_at",
                "ix_findings_open_target", "ix_findings_open_long_target"}
    used = []  # the passes run at once on PostgreSQL: their statements come in any order
    for plan in plans:
        assert "Seq Scan on findings" not in plan, plan
        used += [i for i in expected if f"using {i} on findings" in plan or f"Bitmap Index Scan on {i}" in plan]
    assert sorted(used) == sorted(expected), plans
