"""S3 (listed once for the account): each bucket's ACL, policy, public access block, default
encryption, versioning, access logging, object lock, object ownership (whether ACLs still apply),
lifecycle rules, replication destinations and event notifications, and the account-wide public access
block. Whether a replica sits in another region is decided after every bucket is known (`scan.link`)."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import (
    Context,
    as_list,
    denies_insecure_transport,
    policy_document,
    public_statements,
)

EVERYONE = ("http://acs.amazonaws.com/groups/global/AllUsers",
            "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
BLOCK_KEYS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def _block(answer: dict[str, Any] | None) -> dict[str, bool]:
    config = (answer or {}).get("PublicAccessBlockConfiguration") or {}
    return {k: bool(config.get(k)) for k in BLOCK_KEYS}


def collect(ctx: Context) -> None:
    s3 = ctx.client("s3")
    control = ctx.client("s3control")
    account = ctx.add("s3_account", ctx.account, f"arn:{ctx.partition}:s3:::account/{ctx.account}")
    answer = ctx.guarded(account.path, lambda: (
        True, ctx.call(control, "get_public_access_block", AccountId=ctx.account)), (False, None))
    account_block = _block(answer[1])
    if answer[0]:  # unknown when the call failed: no rule judges it, buckets are judged on their own
        account.facts.update(public_access_block_all=all(account_block.values()), public_access_block=account_block)

    listing = ctx.call(s3, "list_buckets") or {}
    for bucket in listing.get("Buckets", []):
        name = str(bucket["Name"])
        res = ctx.add("s3_bucket", name, f"arn:{ctx.partition}:s3:::{name}", name=name)

        def describe(name: str = name) -> dict[str, Any]:
            return _bucket(ctx, s3, name, account_block)

        res.facts.update(ctx.guarded(res.path, describe, {}))


def _bucket(ctx: Context, s3: Any, name: str, account_block: dict[str, bool]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    location = ctx.call(s3, "get_bucket_location", Bucket=name) or {}
    facts["bucket_region"] = location.get("LocationConstraint") or "us-east-1"

    acl = ctx.call(s3, "get_bucket_acl", Bucket=name) or {}
    public_grants = sorted({f"{g.get('Grantee', {}).get('URI', '').rsplit('/', 1)[-1]}:{g.get('Permission')}"
                            for g in acl.get("Grants", []) if g.get("Grantee", {}).get("URI") in EVERYONE})
    facts["public_acl_grants"] = public_grants
    facts["acl_public"] = bool(public_grants)
    facts["acl_public_write"] = any(g.split(":")[1] in ("WRITE", "WRITE_ACP", "FULL_CONTROL") for g in public_grants)

    policy = ctx.call(s3, "get_bucket_policy", Bucket=name)
    doc = policy_document((policy or {}).get("Policy"))
    facts["has_policy"] = policy is not None
    facts["policy_public"] = bool(public_statements(doc))
    facts["policy_public_actions"] = sorted({str(a) for s in public_statements(doc) for a in as_list(s.get("Action"))})
    facts["tls_enforced"] = denies_insecure_transport(doc)

    bucket_block = _block(ctx.call(s3, "get_public_access_block", Bucket=name))
    block = {k: bucket_block[k] or account_block[k] for k in BLOCK_KEYS}
    facts["public_access_block"] = bucket_block
    facts["public_access_block_all"] = all(block.values())
    facts["public_via_acl"] = facts["acl_public"] and not block["IgnorePublicAcls"]
    facts["public_via_policy"] = facts["policy_public"] and not block["RestrictPublicBuckets"]
    facts["public"] = facts["public_via_acl"] or facts["public_via_policy"]

    enc = ctx.call(s3, "get_bucket_encryption", Bucket=name)
    rules = ((enc or {}).get("ServerSideEncryptionConfiguration") or {}).get("Rules", [])
    algorithms = [((r.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm")) for r in rules]
    facts["default_encryption"] = next((a for a in algorithms if a), "")
    facts["encrypted"] = bool(facts["default_encryption"])
    facts["kms_encrypted"] = any(a and a.startswith("aws:kms") for a in algorithms)

    versioning = ctx.call(s3, "get_bucket_versioning", Bucket=name) or {}
    facts["versioning"] = versioning.get("Status") == "Enabled"
    facts["mfa_delete"] = versioning.get("MFADelete") == "Enabled"

    logging = ctx.call(s3, "get_bucket_logging", Bucket=name) or {}
    facts["access_logging"] = bool(logging.get("LoggingEnabled"))

    lock = ctx.call(s3, "get_object_lock_configuration", Bucket=name,
                    missing_ok=("ObjectLockConfigurationNotFoundError", "NoSuchBucket"))
    facts["object_lock"] = ((lock or {}).get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"

    ownership = ctx.call(s3, "get_bucket_ownership_controls", Bucket=name,
                         missing_ok=("OwnershipControlsNotFoundError", "NoSuchBucket"))
    owners = [str(r.get("ObjectOwnership", "")) for r in
              ((ownership or {}).get("OwnershipControls") or {}).get("Rules", []) or []]
    facts["object_ownership"] = owners[0] if owners else "ObjectWriter"  # no controls: ACLs in force
    facts["acls_enabled"] = facts["object_ownership"] != "BucketOwnerEnforced"
    facts.update(_resilience(ctx, s3, name))
    return facts


def _resilience(ctx: Context, s3: Any, name: str) -> dict[str, Any]:
    """Lifecycle rules, replication destinations and event notifications: hygiene, not exposure."""
    lifecycle = ctx.call(s3, "get_bucket_lifecycle_configuration", Bucket=name) or {}
    enabled = [r for r in lifecycle.get("Rules", []) or [] if r.get("Status") == "Enabled"]
    replication = ctx.call(s3, "get_bucket_replication", Bucket=name,
                           missing_ok=("ReplicationConfigurationNotFoundError", "NoSuchBucket")) or {}
    rules = (replication.get("ReplicationConfiguration") or {}).get("Rules", []) or []
    prefix = f"arn:{ctx.partition}:s3:::"
    targets_of = [str((r.get("Destination") or {}).get("Bucket", "")) for r in rules if r.get("Status") == "Enabled"]
    destinations = sorted({t.removeprefix(prefix) for t in targets_of if t})
    notes = ctx.call(s3, "get_bucket_notification_configuration", Bucket=name) or {}
    kinds = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")
    targets = [k for k in kinds if notes.get(k)]
    if "EventBridgeConfiguration" in notes:
        targets.append("EventBridge")
    return {"lifecycle_rule_count": len(enabled), "lifecycle": bool(enabled),
            "replication_destinations": destinations, "event_notification_targets": targets,
            "event_notifications": bool(targets)}
