"""AWS Config, per region: recorders, whether they record, and what; aggregators and whether they
gather the whole organization from every region."""

from __future__ import annotations

from cloudward.conformity.aws.collectors._base import Context


def collect(ctx: Context) -> None:
    cfg = ctx.client("config")
    recorders = (ctx.call(cfg, "describe_configuration_recorders") or {}).get("ConfigurationRecorders", [])
    statuses = (ctx.call(cfg, "describe_configuration_recorder_status") or {}).get(
        "ConfigurationRecordersStatus", [])
    recording = any(s.get("recording") for s in statuses)
    groups = [r.get("recordingGroup") or {} for r in recorders]
    ctx.add("config_region", ctx.region, f"arn:{ctx.partition}:config:{ctx.region}:{ctx.account}:recorder",
            recorder_present=bool(recorders), recording=recording,
            all_supported=any(g.get("allSupported", True) for g in groups),
            include_global_resources=any(g.get("includeGlobalResourceTypes", False) for g in groups),
            last_status=[str(s.get("lastStatus", "")) for s in statuses],
            org_aggregators_all_regions=_org_aggregators(ctx, cfg))


def _org_aggregators(ctx: Context, cfg: object) -> list[str]:
    names = []
    for agg in ctx.pages(cfg, "describe_configuration_aggregators", "ConfigurationAggregators"):
        source = agg.get("OrganizationAggregationSource") or {}
        if source and source.get("AllAwsRegions"):
            names.append(str(agg.get("ConfigurationAggregatorName", "")))
    return sorted(names)
