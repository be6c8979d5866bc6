"""GuardDuty, per region: is there a detector, and is it enabled."""

from __future__ import annotations

from cloudward.conformity.aws.collectors._base import Context


def collect(ctx: Context) -> None:
    gd = ctx.client("guardduty")
    ids = ctx.pages(gd, "list_detectors", "DetectorIds")
    enabled = False
    disabled_features: list[str] = []
    for detector in ids:
        info = ctx.call(gd, "get_detector", DetectorId=detector) or {}
        if info.get("Status") == "ENABLED":
            enabled = True
        disabled_features += [str(f.get("Name")) for f in info.get("Features", []) or []
                              if f.get("Status") == "DISABLED"]
    ctx.add("guardduty_region", ctx.region, f"arn:{ctx.partition}:guardduty:{ctx.region}:{ctx.account}:detector",
            detector_present=bool(ids), enabled=enabled, detector_ids=list(ids),
            disabled_features=sorted(set(disabled_features)))
