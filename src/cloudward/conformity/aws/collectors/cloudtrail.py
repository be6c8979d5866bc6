"""CloudTrail, per region: the trails whose home is this region (multi-region, logging, log file
validation, KMS, CloudWatch Logs, management events) and a region record; which regions are really
covered by a logging trail is decided after every region is collected (see `scan.link`)."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context


def collect(ctx: Context) -> None:
    ct = ctx.client("cloudtrail")
    answer = ctx.call(ct, "describe_trails", includeShadowTrails=True) or {}
    home_trails = 0
    for trail in answer.get("trailList", []):
        home = trail.get("HomeRegion") or ctx.region
        if home != ctx.region:
            continue
        home_trails += 1
        arn = str(trail.get("TrailARN") or ctx.arn("cloudtrail", f"trail/{trail.get('Name')}"))
        res = ctx.add("trail", str(trail.get("Name", arn)), arn, name=trail.get("Name", ""),
                      multi_region=bool(trail.get("IsMultiRegionTrail")),
                      organization_trail=bool(trail.get("IsOrganizationTrail")),
                      log_file_validation=bool(trail.get("LogFileValidationEnabled")),
                      kms_encrypted=bool(trail.get("KmsKeyId")),
                      cloudwatch_logs=bool(trail.get("CloudWatchLogsLogGroupArn")),
                      s3_bucket=trail.get("S3BucketName", ""))

        def status(arn: str = arn) -> dict[str, Any]:
            state = ctx.call(ct, "get_trail_status", Name=arn) or {}
            selectors = ctx.call(ct, "get_event_selectors", TrailName=arn) or {}
            basic = selectors.get("EventSelectors") or []
            management = bool(selectors.get("AdvancedEventSelectors")) or any(
                s.get("IncludeManagementEvents", True) and s.get("ReadWriteType", "All") == "All" for s in basic)
            return {"logging": bool(state.get("IsLogging")), "management_events_all": management or not basic}

        res.facts.update(ctx.guarded(res.path, status, {}))
    ctx.add("cloudtrail_region", ctx.region, f"arn:{ctx.partition}:cloudtrail:{ctx.region}:{ctx.account}:region",
            home_trails=home_trails)
