"""GuardDuty, per region: is there a detector, is it enabled, which account administers it, and (when
this account may ask: the organization's management account) which account is the delegated
administrator. Whether the account is in an organization at all is joined in `scan.link`."""

from __future__ import annotations

from typing import Any

from cloudward.conformity.aws.collectors._base import Context
from cloudward.conformity.aws.model import CollectError

# Answers meaning "only the organization's management account may ask", not a failed scan.
NOT_MANAGEMENT = ("BadRequestException", "AccessDeniedException", "AccessDenied")


def collect(ctx: Context) -> None:
    gd = ctx.client("guardduty")
    ids = ctx.pages(gd, "list_detectors", "DetectorIds")
    enabled = False
    disabled_features: list[str] = []
    administrators: list[str] = []
    for detector in ids:
        info = ctx.call(gd, "get_detector", DetectorId=detector) or {}
        if info.get("Status") == "ENABLED":
            enabled = True
        disabled_features += [str(f.get("Name")) for f in info.get("Features", []) or []
                              if f.get("Status") == "DISABLED"]
        admin = (ctx.call(gd, "get_administrator_account", DetectorId=detector) or {}).get("Administrator") or {}
        if admin.get("AccountId") and admin.get("RelationshipStatus", "Enabled").lower() == "enabled":
            administrators.append(str(admin["AccountId"]))
    res = ctx.add("guardduty_region", ctx.region,
                  f"arn:{ctx.partition}:guardduty:{ctx.region}:{ctx.account}:detector",
                  detector_present=bool(ids), enabled=enabled, detector_ids=list(ids),
                  disabled_features=sorted(set(disabled_features)), administrator_account=",".join(administrators))
    delegated = _delegated_admins(ctx, gd)
    if delegated is not None:
        res.facts["delegated_admins"] = delegated
        res.facts["self_delegated_admin"] = ctx.account in delegated


def _delegated_admins(ctx: Context, gd: Any) -> list[str] | None:
    """Enabled delegated administrators, or None when this account is not allowed to know."""
    try:
        answer = ctx.call(gd, "list_organization_admin_accounts", missing_ok=())
    except CollectError as exc:
        if exc.code in NOT_MANAGEMENT:
            return None
        raise
    return sorted(str(a.get("AdminAccountId")) for a in (answer or {}).get("AdminAccounts", []) or []
                  if str(a.get("AdminStatus", "ENABLED")).upper() == "ENABLED")
