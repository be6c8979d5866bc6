"""AWS Config, per region: recorders, whether they record, and what."""

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
            last_status=[str(s.get("lastStatus", "")) for s in statuses])
