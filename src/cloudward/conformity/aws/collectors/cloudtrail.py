"""CloudTrail, per region: the trails whose home is this region (multi-region, logging, log file
validation, KMS, CloudWatch Logs, management events, which data events: S3 object reads and writes, Lambda
invocations; whether Amazon Bedrock API calls are recorded)
and a region record; which regions are really covered by a logging trail, and whether any
logging trail records those data events, is decided after every region is collected (see `scan.link`)."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context


def _every_bucket(values: list[Any], partition: str) -> bool:
    return any(str(v) in (f"arn:{partition}:s3", f"arn:{partition}:s3:::", f"arn:{partition}:s3:::*/*")
               for v in values)


def _every_function(values: list[Any], partition: str) -> bool:
    return f"arn:{partition}:lambda" in [str(v) for v in values]


def data_events(selectors: dict[str, Any], partition: str = "aws") -> dict[str, bool]:
    """Which data events a trail records for *every* bucket or function (a selector naming some
    buckets or functions only covers those, which is not the same as covering the account).
    Classic selectors name resource types and ARN prefixes; advanced ones filter on fields."""
    read = write = invoke = False
    for sel in selectors.get("EventSelectors") or []:
        mode = sel.get("ReadWriteType", "All")
        for res in sel.get("DataResources") or []:
            values = list(res.get("Values") or [])
            if res.get("Type") == "AWS::S3::Object" and _every_bucket(values, partition):
                read = read or mode in ("All", "ReadOnly")
                write = write or mode in ("All", "WriteOnly")
            elif res.get("Type") == "AWS::Lambda::Function" and _every_function(values, partition):
                invoke = True
    for sel in selectors.get("AdvancedEventSelectors") or []:
        fields = {str(f.get("Field")): f for f in sel.get("FieldSelectors") or []}
        if "eventCategory" in fields and "Data" not in (fields["eventCategory"].get("Equals") or []):
            continue
        kinds = list((fields.get("resources.type") or {}).get("Equals") or [])
        if "resources.ARN" in fields:  # narrowed to some resources
            continue
        only = (fields.get("readOnly") or {}).get("Equals") or []
        if "AWS::S3::Object" in kinds:
            read = read or not only or "true" in [str(v).lower() for v in only]
            write = write or not only or "false" in [str(v).lower() for v in only]
        if "AWS::Lambda::Function" in kinds:
            invoke = True
    return {"s3_object_read_events": read, "s3_object_write_events": write, "lambda_invoke_events": invoke}


BEDROCK_TYPES = ("AWS::Bedrock::Model", "AWS::Bedrock::AgentAlias", "AWS::Bedrock::KnowledgeBase",
                 "AWS::Bedrock::FlowAlias", "AWS::Bedrock::Guardrail", "AWS::Bedrock::InlineAgent",
                 "AWS::Bedrock::PromptVersion", "AWS::Bedrock::AsyncInvoke")


def records_bedrock(selectors: dict[str, Any]) -> bool:
    """Are Bedrock API calls recorded: management write events (control plane: model access, agents,
    guardrails), or an advanced data selector on a Bedrock resource type (invocations)?"""
    for sel in selectors.get("EventSelectors") or []:
        if sel.get("IncludeManagementEvents", True) and sel.get("ReadWriteType", "All") in ("All", "WriteOnly"):
            return True
    for sel in selectors.get("AdvancedEventSelectors") or []:
        fields = {str(f.get("Field")): f for f in sel.get("FieldSelectors") or []}
        category = list((fields.get("eventCategory") or {}).get("Equals") or [])
        only = [str(v).lower() for v in (fields.get("readOnly") or {}).get("Equals") or []]
        sources = list((fields.get("eventSource") or {}).get("Equals") or [])
        if "Management" in category and (not only or "false" in only) and (
                not sources or "bedrock.amazonaws.com" in sources):
            return True
        kinds = list((fields.get("resources.type") or {}).get("Equals") or [])
        if "Data" in category and any(k in BEDROCK_TYPES for k in kinds):
            return True
    return False


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
            return {"logging": bool(state.get("IsLogging")), "management_events_all": management or not basic,
                    "bedrock_events": records_bedrock(selectors) if (basic or selectors.get("AdvancedEventSelectors"))
                    else True,  # no selectors at all: the default, every management event
                    **data_events(selectors, ctx.partition)}

        res.facts.update(ctx.guarded(res.path, status, {}))
    ctx.add("cloudtrail_region", ctx.region, f"arn:{ctx.partition}:cloudtrail:{ctx.region}:{ctx.account}:region",
            home_trails=home_trails)
