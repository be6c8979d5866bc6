"""AWS Organizations (once for the account): is the account in an organization, is it the management
account, and (from the management account) which accounts are delegated administrators of which
services. Rules do not judge this record directly: `scan.link` hands its facts to the GuardDuty and
Config records, whose org-wide checks only make sense knowing them."""

from __future__ import annotations

from cloudward.conformity.aws.collectors._base import Context


def collect(ctx: Context) -> None:
    org = ctx.client("organizations")
    answer = ctx.call(org, "describe_organization", missing_ok=("AWSOrganizationsNotInUseException",))
    arn = f"arn:{ctx.partition}:organizations::{ctx.account}:account"
    if answer is None:
        ctx.add("organization", ctx.account, arn, in_organization=False, management_account=False)
        return
    info = answer.get("Organization") or {}
    management = str(info.get("MasterAccountId", "")) == ctx.account
    res = ctx.add("organization", ctx.account, arn, in_organization=True, management_account=management,
                  organization_id=str(info.get("Id", "")), feature_set=str(info.get("FeatureSet", "")))
    if not management:  # only the management account (or a delegated admin) may list delegations
        return
    delegated: dict[str, list[str]] = {}
    for admin in ctx.pages(org, "list_delegated_administrators", "DelegatedAdministrators"):
        account = str(admin.get("Id", ""))
        for service in ctx.pages(org, "list_delegated_services_for_account", "DelegatedServices", AccountId=account):
            delegated.setdefault(str(service.get("ServicePrincipal", "")), []).append(account)
    res.facts["delegated_services"] = {k: sorted(v) for k, v in sorted(delegated.items())}
