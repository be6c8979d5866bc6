"""What collectors produce: plain resource records (type, id, ARN, region, account, flat facts) and
errors that name the service, the region, the API call and the IAM permission it needed.

Collectors describe and never judge; rules (`rules/*.yaml`, engine `aws`) decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

GLOBAL = "global"

# IAM action prefixes that differ from the boto3 service name, and S3 actions whose IAM name differs
# from the API operation's.
_IAM_PREFIX = {"s3control": "s3", "elbv2": "elasticloadbalancing", "logs": "logs"}
_ACTION_NAME = {
    ("s3", "ListBuckets"): "ListAllMyBuckets",
    ("s3", "GetBucketEncryption"): "GetEncryptionConfiguration",
    ("s3", "GetPublicAccessBlock"): "GetBucketPublicAccessBlock",
    ("s3", "GetBucketPolicyStatus"): "GetBucketPolicyStatus",
    ("s3control", "GetPublicAccessBlock"): "GetAccountPublicAccessBlock",
    ("lambda", "GetFunctionUrlConfig"): "GetFunctionUrlConfig",
    ("lambda", "ListFunctions20150331"): "ListFunctions",
    ("lambda", "GetPolicy20150331v2"): "GetPolicy",
}


def permission_for(client_service: str, operation: str) -> str:
    """The IAM action an API call needs, e.g. ("s3", "ListBuckets") -> "s3:ListAllMyBuckets"."""
    action = _ACTION_NAME.get((client_service, operation), operation)
    return f"{_IAM_PREFIX.get(client_service, client_service)}:{action}"


@dataclass
class Resource:
    """One thing in the account, described by facts. `type` is the rules' subject."""

    service: str
    type: str
    id: str
    region: str
    account: str
    arn: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The resource's place in the scan's scope: aws/<account>/<region>/<service>/<type>/<id>."""
        return f"aws/{self.account}/{self.region}/{self.service}/{self.type}/{self.id}"

    @property
    def name(self) -> str:
        """What a finding's target is called: the ARN, or the scope path when there is no ARN."""
        return self.arn or self.path

    def all_facts(self) -> dict[str, Any]:
        return {"id": self.id, "arn": self.arn, "region": self.region, "account": self.account, **self.facts}


def unit_scope(account: str, region: str, service: str) -> str:
    return f"aws/{account}/{region}/{service}"


@dataclass
class CollectError(Exception):
    """An API call failed: names the service, region, call and permission; never a secret."""

    service: str
    region: str
    message: str
    operation: str = ""
    permission: str = ""
    code: str = ""
    resource: str = ""  # the scope path of the one resource affected, when not the whole service

    def __str__(self) -> str:
        where = f"{self.service} in {self.region}"
        if self.operation:
            needs = f" (needs {self.permission})" if self.permission else ""
            call = f"{self.code + ' on ' if self.code else ''}{self.operation}{needs}"
            return f"{where}: {call}: {self.message}" if self.message else f"{where}: {call}"
        return f"{where}: {self.message}"


@dataclass
class UnitResult:
    """What one (service, region) collection produced."""

    service: str
    region: str
    resources: list[Resource] = field(default_factory=list)
    errors: list[CollectError] = field(default_factory=list)
    failed: bool = False  # the unit stopped early: nothing in its scope may be marked fixed
    calls: int = 0
    last_operation: str = ""  # the API call being handled, to name it when an answer is malformed


CollectFn = Callable[[Any], None]


@dataclass(frozen=True)
class Collector:
    """A service's collector: `collect(ctx)` adds resources to the context, once per region (or once
    for the account when `regional` is false)."""

    service: str
    collect: CollectFn
    regional: bool = True
    needs: tuple[str, ...] = ()  # boto3 client names it uses, for documentation and --services


def dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
