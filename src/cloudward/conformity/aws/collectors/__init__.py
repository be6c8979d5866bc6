"""One collector per service, each run once per region (or once for the account) and shared by every
rule. A collector describes resources as facts and never judges them."""

from __future__ import annotations

from cloudward.conformity.aws.collectors import (
    backup,
    cloudtrail,
    config,
    ec2,
    ecr,
    eks,
    guardduty,
    iam,
    kms,
    lambda_,
    organizations,
    rds,
    s3,
    ssm,
)
from cloudward.conformity.aws.model import Collector

COLLECTORS: dict[str, Collector] = {c.service: c for c in (
    Collector("ec2", ec2.collect, needs=("ec2",)),
    Collector("iam", iam.collect, regional=False, needs=("iam",)),
    Collector("s3", s3.collect, regional=False, needs=("s3", "s3control")),
    Collector("cloudtrail", cloudtrail.collect, needs=("cloudtrail",)),
    Collector("guardduty", guardduty.collect, needs=("guardduty",)),
    Collector("config", config.collect, needs=("config",)),
    Collector("kms", kms.collect, needs=("kms",)),
    Collector("lambda", lambda_.collect, needs=("lambda",)),
    Collector("ecr", ecr.collect, needs=("ecr",)),
    Collector("eks", eks.collect, needs=("eks",)),
    Collector("rds", rds.collect, needs=("rds",)),
    Collector("organizations", organizations.collect, regional=False, needs=("organizations",)),
    Collector("backup", backup.collect, needs=("backup",)),
    Collector("ssm", ssm.collect, needs=("ssm",)),
)}
ALIASES = {"vpc": "ec2", "ebs": "ec2", "awslambda": "lambda"}

__all__ = ["ALIASES", "COLLECTORS"]
