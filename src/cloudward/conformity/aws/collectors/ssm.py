"""Systems Manager, per region: which instances the SSM agent has registered (managed instances) and
whether they still report in. Joined to EC2 instances in `scan.link`."""

from __future__ import annotations

from cloudward.conformity.aws.collectors._base import Context


def collect(ctx: Context) -> None:
    ssm = ctx.client("ssm")
    managed: dict[str, str] = {}
    for info in ctx.pages(ssm, "describe_instance_information", "InstanceInformationList"):
        if info.get("InstanceId"):
            managed[str(info["InstanceId"])] = str(info.get("PingStatus", ""))
    ctx.add("ssm_region", ctx.region, f"arn:{ctx.partition}:ssm:{ctx.region}:{ctx.account}:managed-instances",
            managed_instances=dict(sorted(managed.items())))
