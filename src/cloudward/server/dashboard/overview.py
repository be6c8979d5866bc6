"""The overview: open findings along the attack chain and by severity, what changed lately, the
most exposed targets and the latest scans, on one screen a team can keep open all day."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from cloudward.core.severity import Severity
from cloudward.server.accounts import Principal
from cloudward.server.auth import READ_ONLY, context
from cloudward.server.dashboard import activity, aggregates, charts
from cloudward.server.dashboard.chain import fold
from cloudward.server.dashboard.render import SEVERITIES, render
from cloudward.server.dashboard.routing import new_router

router = new_router()
RECENT_SCANS = 20


def _worst_first(counts: dict[str, int]) -> int:
    """Sort key: the index of the worst severity present (critical = 0)."""
    return next((i for i, s in enumerate(SEVERITIES) if counts.get(s)), len(SEVERITIES))


def build(request: Request) -> dict[str, Any]:
    """Everything the overview shows (also what the benchmark times, without HTTP)."""
    db = context(request).db
    now = db.clock()
    data = aggregates.overview(db, now)
    scans = db.store.list_scans(limit=RECENT_SCANS)
    with db.read() as session:
        live = activity.live_state(session)
    chain = fold(data.rule_counts)
    by_severity = {s: 0 for s in SEVERITIES}
    per_rule: dict[str, dict[str, int]] = {}
    for rule_id, rank, count in data.rule_counts:
        severity = list(Severity)[rank].value
        by_severity[severity] += count
        per_rule.setdefault(rule_id, {s: 0 for s in SEVERITIES})[severity] += count
    total = sum(by_severity.values())
    top_rules = sorted(per_rule.items(), key=lambda item: (_worst_first(item[1]), -sum(item[1].values()), item[0]))[:8]
    trend = charts.trend(data.new_by_day, data.fixed_by_day, now.date())
    stages = [(s.name, s.slug, s.tally.total, s.tally.worst) for s in chain.stages if s.name != "Around the chain"]
    recent = list(reversed(scans))
    return {
        "total": total, "by_severity": by_severity, "suppressed": data.suppressed, "chain": chain,
        "chevrons": charts.chevrons(stages),
        "severity_chart": charts.bar_chart([(s.capitalize(), by_severity[s], f"sev-{s}", f"/findings?severity={s}")
                                            for s in SEVERITIES]),
        "category_chart": charts.bar_chart([(c, n, "cat", f"/findings?category={c}") for c, n in
                                            sorted(data.categories.items(), key=lambda kv: (-kv[1], kv[0]))][:8]),
        "trend": trend, "new_week": sum(d.new for d in trend.days[-7:]),
        "fixed_week": sum(d.fixed for d in trend.days[-7:]),
        "top_rules": [(rule, counts, charts.stack(counts)) for rule, counts in top_rules],
        "targets": [(t, charts.stack({s: t["by_severity"][s] for s in SEVERITIES})) for t in data.targets],
        "scans": scans[:8],
        "scan_columns": charts.columns([(s.id[:8], s.finding_count, f"/findings?scan={s.id}&status=all",
                                         "scan-" + s.status.value) for s in recent]),
        "stack": charts.stack, "live": live,
    }


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, principal: Principal = Depends(READ_ONLY)) -> HTMLResponse:
    return render(request, "overview.html", principal=principal, section="overview", **build(request))
