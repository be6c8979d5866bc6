"""Real time: CloudTrail management events (EventBridge -> SQS) re-evaluate only what they touched.

    SQS message -> API call(s) -> touched resources -> re-collect their units -> link -> rules
                -> a ScanResult scoped to exactly those resources -> the findings store

Accepted bodies: the EventBridge envelope (`detail-type: AWS API Call via CloudTrail`, the CloudTrail
record under `detail`), a raw CloudTrail record, a CloudTrail log file (`{"Records": [...]}`), and
any of these wrapped by SNS (`{"Type": "Notification", "Message": "..."}`).

What is re-collected: the collectors describe a whole service in a region and cannot filter by id,
so the unit (service x region) that owns a touched resource is collected again — plus the units its
facts are linked with (`scan.link`): IAM for EC2 (instance roles), S3 and every watched region's
CloudTrail for CloudTrail (trail buckets, which regions a trail covers). Only the touched resources
are judged and put in the result's scope (`targets` = their scope paths), so a change that fixes a
finding closes it and every other finding is left as it is. A touched resource that no longer exists
(DeleteTrail, DeleteBucket...) is still in scope, so its findings close. Derived resources are
touched too: a security group's instances, a role's instance profiles, a group's users, the region
and account records of CloudTrail.

Ignored (counted): read-only calls (`readOnly`, Describe*/Get*/List*), calls that failed
(`errorCode`), calls of another account, and calls no rule depends on. A message that is not an
event at all is logged and deleted at once: it will never parse, and retrying it only delays the
queue. A message whose re-collection failed (throttled, access denied) is not deleted: it comes back
after `retry_delay`; after `max_attempts` receives it is left to the queue's RedrivePolicy when it
has one, else logged and deleted (the next full scan catches up).

A stop (SIGINT/SIGTERM or `stop()`) ends receiving; the batch in hand is finished. `once` drains
the queue: it returns when a receive finds nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from cloudward.conformity.aws.collectors import COLLECTORS
from cloudward.conformity.aws.model import GLOBAL, Resource, UnitResult, unit_scope
from cloudward.conformity.aws.scan import SCAN_KIND, Judge, link, run_unit
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.core.signals import stop_on_signals as _stop_on_signals

__all__ = ["ApiCall", "Touch", "WatchSettings", "Watcher", "parse_body", "stop_on_signals", "touches"]

MAX_MESSAGES = 10
MAX_WAIT = 20
ONCE_WAIT = 1
TRIGGER = "watch"

Log = Callable[[str], None]
Recorder = Callable[[ScanResult], None]


@dataclass(frozen=True)
class ApiCall:
    """One CloudTrail management event, reduced to what decides what to re-collect."""

    source: str  # ec2.amazonaws.com
    name: str  # AuthorizeSecurityGroupIngress (Lambda's dated suffixes removed)
    region: str
    account: str
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False
    error: str = ""


@dataclass(frozen=True)
class Touch:
    """Resources of `types` in the unit (service, region): those with `ids`, or all when ids is None."""

    service: str
    region: str
    types: tuple[str, ...]
    ids: tuple[str, ...] | None = None


# --- parsing ------------------------------------------------------------------------------------------

_DATED = re.compile(r"\d{8}(v\d+)?$")  # Lambda: CreateFunction20150331, AddPermission20150331v2


def parse_body(body: str) -> list[ApiCall]:
    """The API calls in one SQS message body; ValueError when it is not a CloudTrail event."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # SNS -> SQS
        return parse_body(doc["Message"])
    if "detail" in doc and "detail-type" in doc:  # EventBridge
        detail = doc["detail"]
        if not isinstance(detail, dict):
            raise ValueError("EventBridge event without a detail object")
        if not str(doc.get("detail-type", "")).startswith("AWS API Call via CloudTrail"):
            raise ValueError(f"EventBridge event of type {doc.get('detail-type')!r}, not a CloudTrail API call")
        return [_call(detail, region=str(doc.get("region", "")), account=str(doc.get("account", "")))]
    if isinstance(doc.get("Records"), list):  # a CloudTrail log file
        return [_call(r) for r in doc["Records"]]
    if "eventName" in doc:
        return [_call(doc)]
    raise ValueError("neither an EventBridge event nor a CloudTrail record")


def _call(record: Any, region: str = "", account: str = "") -> ApiCall:
    if not isinstance(record, dict):
        raise ValueError("a CloudTrail record that is not an object")
    name, source = record.get("eventName"), record.get("eventSource")
    if not isinstance(name, str) or not name or not isinstance(source, str) or not source:
        raise ValueError("a CloudTrail record without eventName or eventSource")
    identity = _mapping(record.get("userIdentity"))
    account = str(record.get("recipientAccountId") or account or identity.get("accountId") or "")
    read_only = record.get("readOnly")
    if isinstance(read_only, str):
        read_only = read_only.lower() == "true"
    return ApiCall(source=source, name=_DATED.sub("", name), region=str(record.get("awsRegion") or region),
                   account=account, request=_mapping(record.get("requestParameters")),
                   response=_mapping(record.get("responseElements")),
                   read_only=bool(read_only) if read_only is not None else name.startswith(_READ_PREFIXES),
                   error=str(record.get("errorCode") or ""))


_READ_PREFIXES = ("Describe", "Get", "List", "Head", "Lookup", "Batch Get", "Search", "Select")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _values(doc: Any, *keys: str) -> list[str]:
    """Every string (or list of strings) under any of `keys`, at any depth of a request/response."""
    wanted = {k.lower() for k in keys}
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.lower() in wanted:
                    if isinstance(value, str) and value:
                        out.append(value)
                    elif isinstance(value, list):
                        out.extend(v for v in value if isinstance(v, str) and v)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return list(dict.fromkeys(out))


def _last(value: str, sep: str = "/") -> str:
    """A name out of an ARN (`arn:...:trail/NAME`, `arn:...:function:NAME`, `arn:...:key/ID`)."""
    if value.startswith("arn:"):
        tail = value.split(":", 5)[-1]
        return tail.rsplit(sep, 1)[-1].rsplit(":", 1)[-1] if sep in tail else tail.rsplit(":", 1)[-1]
    return value


# --- which resources an API call touches ---------------------------------------------------------------

EC2_GROUP = ("AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress", "AuthorizeSecurityGroupEgress",
             "RevokeSecurityGroupEgress", "ModifySecurityGroupRules", "UpdateSecurityGroupRuleDescriptionsIngress",
             "CreateSecurityGroup", "DeleteSecurityGroup")
EC2_INSTANCE = ("RunInstances", "ModifyInstanceMetadataOptions", "ModifyInstanceAttribute", "TerminateInstances",
                "StartInstances", "StopInstances", "AssociateIamInstanceProfile",
                "ReplaceIamInstanceProfileAssociation", "DisassociateIamInstanceProfile",
                "ModifyNetworkInterfaceAttribute", "AssociateAddress", "DisassociateAddress", "MonitorInstances",
                "UnmonitorInstances")
EC2_OTHER = {
    "ModifySnapshotAttribute": ("snapshot", ("snapshotId",)), "ResetSnapshotAttribute": ("snapshot", ("snapshotId",)),
    "CreateSnapshot": ("snapshot", ("snapshotId",)), "DeleteSnapshot": ("snapshot", ("snapshotId",)),
    "ModifyImageAttribute": ("ami", ("imageId",)), "ResetImageAttribute": ("ami", ("imageId",)),
    "RegisterImage": ("ami", ("imageId",)), "DeregisterImage": ("ami", ("imageId",)),
    "CreateVolume": ("volume", ("volumeId",)), "DeleteVolume": ("volume", ("volumeId",)),
    "CreateNetworkAclEntry": ("network_acl", ("networkAclId",)),
    "ReplaceNetworkAclEntry": ("network_acl", ("networkAclId",)),
    "DeleteNetworkAclEntry": ("network_acl", ("networkAclId",)),
}
EC2_ALL = {"EnableEbsEncryptionByDefault": ("ebs_defaults",), "DisableEbsEncryptionByDefault": ("ebs_defaults",),
           "CreateFlowLogs": ("vpc",), "DeleteFlowLogs": ("vpc",), "CreateVpc": ("vpc",), "DeleteVpc": ("vpc",)}
S3_BUCKET = ("PutBucketAcl", "PutBucketPolicy", "DeleteBucketPolicy", "PutBucketPublicAccessBlock",
             "PutPublicAccessBlock", "DeleteBucketPublicAccessBlock", "DeletePublicAccessBlock",
             "PutBucketEncryption", "DeleteBucketEncryption", "PutBucketVersioning", "PutBucketLogging",
             "PutObjectLockConfiguration", "CreateBucket", "DeleteBucket", "PutBucketOwnershipControls")
S3_ACCOUNT = ("PutAccountPublicAccessBlock", "DeleteAccountPublicAccessBlock")
IAM_USER = ("CreateUser", "DeleteUser", "AttachUserPolicy", "DetachUserPolicy", "PutUserPolicy", "DeleteUserPolicy",
            "CreateAccessKey", "DeleteAccessKey", "UpdateAccessKey", "CreateLoginProfile", "DeleteLoginProfile",
            "UpdateLoginProfile", "EnableMFADevice", "DeactivateMFADevice", "DeleteVirtualMFADevice",
            "AddUserToGroup", "RemoveUserFromGroup")
IAM_ROLE = ("CreateRole", "DeleteRole", "AttachRolePolicy", "DetachRolePolicy", "PutRolePolicy", "DeleteRolePolicy",
            "UpdateAssumeRolePolicy")
IAM_GROUP = ("AttachGroupPolicy", "DetachGroupPolicy", "PutGroupPolicy", "DeleteGroupPolicy", "DeleteGroup")
IAM_POLICY = ("CreatePolicy", "DeletePolicy", "CreatePolicyVersion", "SetDefaultPolicyVersion",
              "DeletePolicyVersion")
IAM_PROFILE = ("CreateInstanceProfile", "DeleteInstanceProfile", "AddRoleToInstanceProfile",
               "RemoveRoleFromInstanceProfile")
IAM_ACCOUNT = {"UpdateAccountPasswordPolicy": ("password_policy",), "DeleteAccountPasswordPolicy": ("password_policy",)}
TRAIL = ("CreateTrail", "DeleteTrail", "UpdateTrail", "StartLogging", "StopLogging", "PutEventSelectors")
GUARDDUTY = ("CreateDetector", "DeleteDetector", "UpdateDetector")
CONFIG = ("PutConfigurationRecorder", "DeleteConfigurationRecorder", "StartConfigurationRecorder",
          "StopConfigurationRecorder", "PutDeliveryChannel", "DeleteDeliveryChannel")
KMS = ("CreateKey", "EnableKeyRotation", "DisableKeyRotation", "PutKeyPolicy", "ScheduleKeyDeletion",
       "CancelKeyDeletion", "EnableKey", "DisableKey")
LAMBDA = ("CreateFunction", "DeleteFunction", "UpdateFunctionConfiguration", "AddPermission", "RemovePermission",
          "CreateFunctionUrlConfig", "UpdateFunctionUrlConfig", "DeleteFunctionUrlConfig")
ECR = ("CreateRepository", "DeleteRepository", "PutImageScanningConfiguration", "PutImageTagMutability",
       "SetRepositoryPolicy", "DeleteRepositoryPolicy", "PutLifecyclePolicy", "DeleteLifecyclePolicy")
EKS = ("CreateCluster", "DeleteCluster", "UpdateClusterConfig", "UpdateClusterVersion")
RDS_INSTANCE = ("CreateDBInstance", "DeleteDBInstance", "ModifyDBInstance", "RestoreDBInstanceFromDBSnapshot")
RDS_SNAPSHOT = ("CreateDBSnapshot", "DeleteDBSnapshot", "ModifyDBSnapshotAttribute", "CopyDBSnapshot")


def touches(call: ApiCall, watched_regions: Iterable[str] = ()) -> list[Touch] | None:
    """What one write call touched; None when no rule depends on it (an unknown event)."""
    source, name, region = call.source.removesuffix(".amazonaws.com"), call.name, call.region
    req, resp = call.request, call.response
    if source == "ec2":
        if name in EC2_GROUP:
            ids = _values(req, "groupId") + _values(resp, "groupId")
            return [Touch("ec2", region, ("security_group",), tuple(ids) if ids else None)]
        if name in EC2_INSTANCE:
            ids = _values(req, "instanceId") + _values(resp, "instanceId")
            return [Touch("ec2", region, ("instance",), tuple(ids) if ids else None)]
        if name in EC2_OTHER:
            kind, keys = EC2_OTHER[name]
            ids = _values(req, *keys) + _values(resp, *keys)
            return [Touch("ec2", region, (kind,), tuple(ids) if ids else None)]
        if name in EC2_ALL:
            return [Touch("ec2", region, EC2_ALL[name])]
        return None
    if source == "s3":
        if name in S3_BUCKET:
            ids = _values(req, "bucketName")
            return [Touch("s3", GLOBAL, ("s3_bucket",), tuple(ids) if ids else None)]
        if name in S3_ACCOUNT:
            return [Touch("s3", GLOBAL, ("s3_account", "s3_bucket"))]
        return None
    if source == "iam":
        if name in IAM_USER:
            return [Touch("iam", GLOBAL, ("iam_user",), _ids(_values(req, "userName")))]
        if name in IAM_ROLE:
            return [Touch("iam", GLOBAL, ("iam_role",), _ids(_values(req, "roleName")))]
        if name in IAM_GROUP:  # the group's members are derived after collection (facts.groups)
            return [Touch("iam", GLOBAL, ("iam_group",), _ids(_values(req, "groupName")))]
        if name in IAM_POLICY:  # whoever holds the policy may change: every principal
            ids = [_last(v) for v in _values(req, "policyArn", "policyName") + _values(resp, "policyName")]
            return [Touch("iam", GLOBAL, ("iam_policy",), _ids(ids)),
                    Touch("iam", GLOBAL, ("iam_user", "iam_role", "instance_profile", "iam_account"))]
        if name in IAM_PROFILE:
            return [Touch("iam", GLOBAL, ("instance_profile",), _ids(_values(req, "instanceProfileName")))]
        if name in IAM_ACCOUNT:
            return [Touch("iam", GLOBAL, IAM_ACCOUNT[name])]
        return None
    if source == "cloudtrail" and name in TRAIL:
        ids = [_last(v) for v in _values(req, "name", "trailName")]
        regions = sorted({*watched_regions, region})
        return [Touch("cloudtrail", region, ("trail",), _ids(ids)),
                *(Touch("cloudtrail", r, ("cloudtrail_region",)) for r in regions),
                Touch("cloudtrail", GLOBAL, ("cloudtrail_account",))]
    if source == "guardduty" and name in GUARDDUTY:
        return [Touch("guardduty", region, ("guardduty_region",))]
    if source == "config" and name in CONFIG:
        return [Touch("config", region, ("config_region",))]
    if source == "kms" and name in KMS:
        ids = [_last(v) for v in _values(req, "keyId")] + _values(_mapping(resp.get("keyMetadata")), "keyId")
        return [Touch("kms", region, ("kms_key",), _ids(ids))]
    if source == "lambda" and name in LAMBDA:
        ids = [_last(v, ":") for v in _values(req, "functionName")]
        return [Touch("lambda", region, ("lambda_function",), _ids(ids))]
    if source == "ecr":
        if name in ECR:
            return [Touch("ecr", region, ("ecr_repository",), _ids(_values(req, "repositoryName")))]
        if name == "PutRegistryScanningConfiguration":
            return [Touch("ecr", region, ("ecr_repository",))]
        return None
    if source == "eks" and name in EKS:
        return [Touch("eks", region, ("eks_cluster",), _ids(_values(req, "name", "clusterName")))]
    if source == "rds":
        if name in RDS_INSTANCE:
            return [Touch("rds", region, ("rds_instance",), _ids(_values(req, "dBInstanceIdentifier")))]
        if name in RDS_SNAPSHOT:
            ids = _values(req, "dBSnapshotIdentifier", "targetDBSnapshotIdentifier")
            return [Touch("rds", region, ("rds_snapshot",), _ids(ids))]
    return None


def _ids(values: list[str]) -> tuple[str, ...] | None:
    return tuple(values) if values else None


# Facts joined across services by `scan.link`: collecting a unit of the key needs these units too.
LINKED = {"ec2": ("iam",), "cloudtrail": ("s3",)}


# --- re-evaluation -----------------------------------------------------------------------------------


def reevaluate(session: Any, judge: Judge, wanted: list[Touch], regions: Iterable[str], *,
               concurrency: int = 4) -> ScanResult:
    """Re-collect the units of `wanted` (and those their facts are linked with), judge only the touched
    resources, and return a completed ScanResult scoped to them (errors name the units that failed)."""
    account = session.account
    units: set[tuple[str, str]] = set()
    for touch in wanted:
        units |= _units(touch)
    result = ScanResult(kind=SCAN_KIND)
    collected: list[UnitResult] = []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(units) or 1)),
                            thread_name_prefix="cw-watch") as pool:
        collected = list(pool.map(lambda u: run_unit(session, COLLECTORS[u[0]], u[1]), sorted(units)))
    failed = {(u.service, u.region) for u in collected if u.failed}
    resources = [r for u in collected for r in u.resources]
    extra = link(resources)
    everything = [*resources, *extra]
    by_unit: dict[tuple[str, str], list[Resource]] = {}
    for res in everything:
        by_unit.setdefault((res.service, res.region), []).append(res)

    keep: dict[str, Resource] = {}
    targets: list[str] = []
    for touch in _expand(wanted, everything):
        region = GLOBAL if not COLLECTORS[touch.service].regional else touch.region
        pool_ = by_unit.get((touch.service, region), [])
        for res in pool_:
            if res.type in touch.types and (touch.ids is None or res.id in touch.ids):
                keep[res.path] = res
        if touch.ids is None:
            # every resource of these types in the unit: the unit's own resources scope it (a deleted one
            # is closed by the next full scan, which covers the unit)
            targets_of_touch = [r.path for r in pool_ if r.type in touch.types]
        else:
            targets_of_touch = [f"aws/{account}/{region}/{touch.service}/{t}/{i}" for t in touch.types
                                for i in touch.ids]
        targets += targets_of_touch
        broken = sorted(f"{s}/{r}" for s, r in _units(touch, units) & failed)
        if broken:  # not looked at: nothing in this touch's scope may be closed
            for target in targets_of_touch:
                result.add_error(target, f"re-collection failed ({', '.join(broken)})", stage=touch.service)
    for unit in collected:
        for error in unit.errors:
            result.add_error(error.resource or unit_scope(account, error.region, error.service), str(error),
                             stage=error.service)
    result.targets = sorted(set(targets))
    result.findings = judge.findings(keep.values())
    result.stats = {"account": account, "trigger": TRIGGER, "units": sorted(f"{s}/{r}" for s, r in units),
                    "failed_units": sorted(f"{s}/{r}" for s, r in failed), "resources": len(keep),
                    "api_calls": sum(u.calls for u in collected), "partial": bool(failed)}
    result.finish(ScanStatus.COMPLETED)
    return result


def _units(touch: Touch, collected: set[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    """The units whose collection the touched resources' facts come from (their own and the linked)."""
    region = GLOBAL if not COLLECTORS[touch.service].regional else touch.region
    if touch.service == "cloudtrail":  # trails, regions and the account record come from every trail
        own = {u for u in (collected or set()) if u[0] == "cloudtrail"}
        if region != GLOBAL:
            own.add(("cloudtrail", region))
    else:
        own = {(touch.service, region)}
    for other in LINKED.get(touch.service, ()):
        own.add((other, GLOBAL if not COLLECTORS[other].regional else region))
    return own


def _expand(wanted: list[Touch], resources: list[Resource]) -> list[Touch]:
    """Add the resources whose facts derive from a touched one: a group's instances, a role's instance
    profiles, an IAM group's members."""
    out = list(wanted)
    for touch in wanted:
        if touch.service == "ec2" and "security_group" in touch.types:
            groups = touch.ids
            ids = tuple(r.id for r in resources if r.type == "instance" and r.region == touch.region and (
                groups is None or set(r.facts.get("security_group_ids", [])) & set(groups)))
            if ids:
                out.append(Touch("ec2", touch.region, ("instance",), ids))
        if touch.service == "iam" and "iam_role" in touch.types and touch.ids is not None:
            ids = tuple(r.id for r in resources if r.type == "instance_profile"
                        and set(r.facts.get("role_names", [])) & set(touch.ids))
            if ids:
                out.append(Touch("iam", GLOBAL, ("instance_profile",), ids))
        if touch.service == "iam" and "iam_group" in touch.types:
            ids = tuple(r.id for r in resources if r.type == "iam_user" and (
                touch.ids is None or set(r.facts.get("groups", [])) & set(touch.ids)))
            if ids:
                out.append(Touch("iam", GLOBAL, ("iam_user",), ids))
    return out


# --- the loop ------------------------------------------------------------------------------------------


@dataclass
class WatchSettings:
    queue_url: str
    regions: list[str] = field(default_factory=list)
    once: bool = False
    wait_seconds: int = MAX_WAIT
    visibility_timeout: int = 300
    retry_delay: int = 30
    max_attempts: int = 5


class _ReceiveInterrupted(BaseException):
    """Raised by the signal handler while the loop waits in a long poll."""


class Watcher:
    """One consumer of one queue for one account. `run()` blocks until stopped (or drained with `once`)."""

    def __init__(self, sqs: Any, session: Any, judge: Judge, settings: WatchSettings, *,
                 record: Recorder | None = None, log: Log | None = None) -> None:
        self.sqs, self.session, self.judge, self.settings = sqs, session, judge, settings
        self.record = record
        self.log: Log = log or (lambda _line: None)
        self._stop = threading.Event()
        self.receiving = False
        self.redrive = False
        self.stats: dict[str, int] = dict.fromkeys(
            ("messages", "events", "evaluated", "read_only", "failed_calls", "other_account", "unknown",
             "malformed", "batches", "findings", "retried", "dropped", "receive_errors"), 0)

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> None:
        """Raises when the queue cannot be read; learns whether it has a RedrivePolicy."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.settings.queue_url,
                                                   AttributeNames=["RedrivePolicy"]).get("Attributes", {})
        self.redrive = "RedrivePolicy" in attributes

    def run(self) -> dict[str, int]:
        errors_in_a_row = 0
        while not self._stop.is_set():
            try:
                messages = self._receive()
                errors_in_a_row = 0
            except _ReceiveInterrupted:
                break
            except Exception as exc:
                errors_in_a_row += 1
                self.stats["receive_errors"] += 1
                self.log(f"receive failed: {type(exc).__name__}: {exc}")
                if self.settings.once and errors_in_a_row >= 3:
                    raise
                self._stop.wait(min(2 ** errors_in_a_row, 30))
                continue
            if not messages:
                if self.settings.once:
                    break
                continue
            self.handle(messages)
        return dict(self.stats)

    def _receive(self) -> list[dict[str, Any]]:
        wait = ONCE_WAIT if self.settings.once else max(0, min(self.settings.wait_seconds, MAX_WAIT))
        self.receiving = True
        try:
            if self._stop.is_set():
                return []
            answer = self.sqs.receive_message(QueueUrl=self.settings.queue_url, MaxNumberOfMessages=MAX_MESSAGES,
                                              WaitTimeSeconds=wait, VisibilityTimeout=self.settings.visibility_timeout,
                                              MessageSystemAttributeNames=["ApproximateReceiveCount"])
        finally:
            self.receiving = False
        return list(answer.get("Messages", []))

    def handle(self, messages: list[dict[str, Any]]) -> None:
        """One batch: parse every message, re-evaluate the union of what they touched once, record,
        then delete the messages (or leave them to come back when the re-collection failed)."""
        self.stats["messages"] += len(messages)
        wanted: list[Touch] = []
        acting: list[tuple[dict[str, Any], list[Touch]]] = []
        for message in messages:
            try:
                calls = parse_body(str(message.get("Body", "")))
            except ValueError as exc:
                self.stats["malformed"] += 1
                self.log(f"malformed message {message.get('MessageId', '?')} deleted: {exc}")
                self._delete(message)
                continue
            mine: list[Touch] = []
            for call in calls:
                self.stats["events"] += 1
                kind = self._classify(call)
                if kind != "evaluated":
                    self.stats[kind] += 1
                    continue
                found = touches(call, self.settings.regions) or []
                self.stats["evaluated"] += 1
                self.log(f"event      {call.name} ({call.source}, {call.region or '?'})")
                mine += found
            wanted += mine
            acting.append((message, mine))
        if not wanted:
            for message, _ in acting:
                self._delete(message)
            return
        result = reevaluate(self.session, self.judge, _dedupe(wanted), self.settings.regions)
        self.stats["batches"] += 1
        self.stats["findings"] += len(result.findings)
        if self.record is not None:
            self.record(result)
        failed = set(result.stats.get("failed_units", []))
        self.log(f"evaluated  {len(result.targets)} resource(s): {len(result.findings)} finding(s)"
                 + (f"; re-collection failed: {', '.join(sorted(failed))}" if failed else ""))
        for message, mine in acting:
            if failed and any(f"{s}/{r}" in failed for t in mine for s, r in _units(t)):
                self._retry(message)
            else:
                self._delete(message)

    def _classify(self, call: ApiCall) -> str:
        if call.read_only:
            return "read_only"
        if call.error:
            return "failed_calls"
        if call.account and self.session.account and call.account != self.session.account:
            return "other_account"
        if touches(call, self.settings.regions) is None:
            return "unknown"
        return "evaluated"

    def _delete(self, message: dict[str, Any]) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
        except Exception as exc:  # it comes back and is evaluated again: harmless
            self.log(f"could not delete a handled message: {type(exc).__name__}: {exc}")

    def _retry(self, message: dict[str, Any]) -> None:
        attempts = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1") or 1)
        if attempts >= self.settings.max_attempts:
            if self.redrive:
                self.log(f"message {message.get('MessageId', '?')} failed {attempts} times: left to the "
                         "queue's redrive policy")
                return
            self.stats["dropped"] += 1
            self.log(f"message {message.get('MessageId', '?')} failed {attempts} times: deleted (the next full "
                     "scan will see the change)")
            self._delete(message)
            return
        self.stats["retried"] += 1
        try:
            self.sqs.change_message_visibility(QueueUrl=self.settings.queue_url,
                                               ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=self.settings.retry_delay)
        except Exception as exc:
            self.log(f"could not release a failed message early: {type(exc).__name__}: {exc}")


def _dedupe(wanted: list[Touch]) -> list[Touch]:
    """Merge touches of the same unit and types; ids None (everything) wins."""
    merged: dict[tuple[str, str, tuple[str, ...]], set[str] | None] = {}
    for touch in wanted:
        key = (touch.service, touch.region, touch.types)
        if key in merged and merged[key] is None:
            continue
        if touch.ids is None:
            merged[key] = None
        else:
            current = merged.get(key)
            merged[key] = (current or set()) | set(touch.ids)
    return [Touch(s, r, t, None if ids is None else tuple(sorted(ids))) for (s, r, t), ids in merged.items()]


def stop_on_signals(watcher: Watcher) -> AbstractContextManager[list[int]]:
    """SIGINT and SIGTERM stop the watcher after the batch in hand; a second SIGINT interrupts at
    once. Yields the signals received (core/signals.py)."""
    return _stop_on_signals(watcher, _ReceiveInterrupted)
