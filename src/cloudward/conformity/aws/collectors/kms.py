"""KMS, per region: customer-managed keys, their rotation, state and key policy."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context, policy_document, public_statements


def collect(ctx: Context) -> None:
    kms = ctx.client("kms")
    for key in ctx.pages(kms, "list_keys", "Keys"):
        kid = str(key["KeyId"])
        arn = str(key.get("KeyArn") or ctx.arn("kms", f"key/{kid}"))
        res = ctx.add("kms_key", kid, arn)

        def describe(kid: str = kid) -> dict[str, Any]:
            meta = (ctx.call(kms, "describe_key", KeyId=kid) or {}).get("KeyMetadata") or {}
            customer = meta.get("KeyManager") == "CUSTOMER"
            spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
            state = str(meta.get("KeyState", ""))
            facts: dict[str, Any] = {"customer_managed": customer, "state": state, "key_spec": spec,
                                     "symmetric": spec == "SYMMETRIC_DEFAULT",
                                     "pending_deletion": state == "PendingDeletion", "enabled": state == "Enabled"}
            if customer and spec == "SYMMETRIC_DEFAULT" and state == "Enabled" \
                    and meta.get("Origin", "AWS_KMS") == "AWS_KMS":
                rotation = ctx.call(kms, "get_key_rotation_status", KeyId=kid) or {}
                facts["rotation_enabled"] = bool(rotation.get("KeyRotationEnabled"))
            if customer:
                policy = ctx.call(kms, "get_key_policy", KeyId=kid, PolicyName="default") or {}
                facts["policy_public"] = bool(public_statements(policy_document(policy.get("Policy"))))
            return facts

        res.facts.update(ctx.guarded(res.path, describe, {}))
