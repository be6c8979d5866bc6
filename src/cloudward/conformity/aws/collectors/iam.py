"""IAM (global): users and their access keys, MFA (hardware or virtual) and console use; roles and their
trust (including service trust without a source condition); customer policies; instance profiles and
whether their role is admin-equivalent; the password policy; the root account (access keys and MFA from
the account summary and the credential report); SAML providers and the SecurityAudit role.

Access key ids are shown only as their last four characters; secrets are never read.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from cloudward.conformity.aws.collectors._base import (
    Context,
    allowed_actions,
    as_list,
    days_since,
    grants_admin,
    policy_document,
    statements,
)

ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"
SUPPORT_POLICY = "arn:aws:iam::aws:policy/AWSSupportAccess"
AUDIT_POLICY = "arn:aws:iam::aws:policy/SecurityAudit"
# Condition keys that tie a service's use of a role to this account's resources (confused deputy).
SOURCE_KEYS = frozenset({"aws:sourceaccount", "aws:sourcearn", "aws:sourceorgid", "aws:sourceorgpaths"})
# Actions that let a principal give itself more power when granted on every resource.
ESCALATION = ("iam:passrole", "iam:createpolicyversion", "iam:setdefaultpolicyversion", "iam:attachuserpolicy",
              "iam:attachrolepolicy", "iam:attachgrouppolicy", "iam:putuserpolicy", "iam:putrolepolicy",
              "iam:putgrouppolicy", "iam:createaccesskey", "iam:updateloginprofile", "iam:createloginprofile",
              "iam:updateassumerolepolicy", "iam:*")


def escalation_actions(doc: dict[str, Any]) -> list[str]:
    out = set()
    for stmt in statements(doc):
        if stmt.get("Effect") != "Allow" or "*" not in [str(r) for r in as_list(stmt.get("Resource"))]:
            continue
        for action in as_list(stmt.get("Action")):
            if str(action).lower() in ESCALATION:
                out.add(str(action))
    return sorted(out)


class _Policies:
    """Policy documents by ARN, fetched once per scan."""

    def __init__(self, ctx: Context, iam: Any) -> None:
        self.ctx, self.iam = ctx, iam
        self.docs: dict[str, dict[str, Any]] = {}

    def admin(self, arn: str) -> bool:
        if arn.endswith(":policy/AdministratorAccess") and ":aws:policy/" in arn:
            return True
        doc = self.docs.get(arn)
        return doc is not None and grants_admin(doc)


def _inline(ctx: Context, iam: Any, kind: str, name: str) -> dict[str, dict[str, Any]]:
    """Inline policy documents of a user, role or group."""
    lister = {"user": "list_user_policies", "role": "list_role_policies", "group": "list_group_policies"}[kind]
    getter = {"user": "get_user_policy", "role": "get_role_policy", "group": "get_group_policy"}[kind]
    param = {"user": "UserName", "role": "RoleName", "group": "GroupName"}[kind]
    names = ctx.pages(iam, lister, "PolicyNames", **{param: name})
    out = {}
    for policy in names:
        answer = ctx.call(iam, getter, **{param: name, "PolicyName": policy}) or {}
        out[str(policy)] = policy_document(answer.get("PolicyDocument"))
    return out


def _attached(ctx: Context, iam: Any, kind: str, name: str) -> list[str]:
    lister = {"user": "list_attached_user_policies", "role": "list_attached_role_policies",
              "group": "list_attached_group_policies"}[kind]
    param = {"user": "UserName", "role": "RoleName", "group": "GroupName"}[kind]
    return [str(p.get("PolicyArn", "")) for p in ctx.pages(iam, lister, "AttachedPolicies", **{param: name})]


def _admin_sources(policies: _Policies, attached: list[str], inline: dict[str, dict[str, Any]],
                   prefix: str = "") -> list[str]:
    out = [f"{prefix}attached:{arn.rsplit('/', 1)[-1]}" for arn in attached if policies.admin(arn)]
    out += [f"{prefix}inline:{name}" for name, doc in inline.items() if grants_admin(doc)]
    return out


def _trust_facts(doc: dict[str, Any], account: str) -> dict[str, Any]:
    public = False
    cross: list[str] = []
    services: list[str] = []
    unguarded: list[str] = []
    for stmt in statements(doc):
        if stmt.get("Effect") != "Allow":
            continue
        principal = stmt.get("Principal")
        condition = stmt.get("Condition") or {}
        keys = {k.lower() for block in condition.values() if isinstance(block, dict) for k in block}
        aws: list[str] = []
        if principal == "*":
            aws = ["*"]
        elif isinstance(principal, dict):
            aws = [str(p) for p in as_list(principal.get("AWS"))]
            named = [str(s) for s in as_list(principal.get("Service"))]
            services += named
            actions = {str(a).lower() for a in as_list(stmt.get("Action"))}
            if named and actions & {"sts:assumerole", "sts:*", "*"} and not keys & SOURCE_KEYS:
                unguarded += named
        if "*" in aws and not keys & {"aws:principalorgid", "aws:principalaccount", "aws:principalarn",
                                      "aws:sourceaccount", "sts:externalid"}:
            public = True
        for p in aws:
            other = p.split(":")[4] if p.startswith("arn:") and p.count(":") >= 5 else (p if p.isdigit() else "")
            if other and other != account and "sts:externalid" not in keys:
                cross.append(other)
    return {"trust_public": public, "trusted_accounts_without_external_id": sorted(set(cross)),
            "trusted_services": sorted(set(services)), "services_without_source_condition": sorted(set(unguarded))}


def collect(ctx: Context) -> None:
    iam = ctx.client("iam")
    policies = _Policies(ctx, iam)

    for policy in ctx.pages(iam, "list_policies", "Policies", Scope="Local"):
        arn = str(policy["Arn"])
        version = ctx.call(iam, "get_policy_version", PolicyArn=arn,
                           VersionId=policy.get("DefaultVersionId", "v1")) or {}
        doc = policy_document((version.get("PolicyVersion") or {}).get("Document"))
        policies.docs[arn] = doc
        ctx.add("iam_policy", str(policy.get("PolicyName", arn)), arn, name=policy.get("PolicyName", ""),
                admin_equivalent=grants_admin(doc), attachment_count=int(policy.get("AttachmentCount", 0) or 0),
                attached=int(policy.get("AttachmentCount", 0) or 0) > 0,
                escalation_actions=escalation_actions(doc),
                wildcard_service_actions=sorted({a for a in allowed_actions(doc) if a.endswith(":*") and a != "*:*"}))

    groups: dict[str, list[str]] = {}
    for group in ctx.pages(iam, "list_groups", "Groups"):
        name = str(group["GroupName"])
        groups[name] = _admin_sources(policies, _attached(ctx, iam, "group", name), _inline(ctx, iam, "group", name),
                                      f"group:{name}:")

    for user in ctx.pages(iam, "list_users", "Users"):
        name = str(user["UserName"])
        arn = str(user.get("Arn", ctx.arn("iam", f"user/{name}", region="")))
        res = ctx.add("iam_user", name, arn, name=name)

        def describe(user: dict[str, Any] = user, name: str = name) -> dict[str, Any]:
            login = ctx.call(iam, "get_login_profile", UserName=name)
            mfa = ctx.pages(iam, "list_mfa_devices", "MFADevices", UserName=name)
            keys = []
            for key in ctx.pages(iam, "list_access_keys", "AccessKeyMetadata", UserName=name):
                used = ctx.call(iam, "get_access_key_last_used", AccessKeyId=key["AccessKeyId"]) or {}
                last = (used.get("AccessKeyLastUsed") or {}).get("LastUsedDate")
                age = days_since(key.get("CreateDate"))
                keys.append({"id": "…" + str(key["AccessKeyId"])[-4:], "active": key.get("Status") == "Active",
                             "age_days": age, "last_used_days": days_since(last),
                             "unused_days": days_since(last) if last else age})
            attached = _attached(ctx, iam, "user", name)
            inline = _inline(ctx, iam, "user", name)
            member_of = [str(g["GroupName"]) for g in ctx.pages(iam, "list_groups_for_user", "Groups", UserName=name)]
            admin = _admin_sources(policies, attached, inline) + [s for g in member_of for s in groups.get(g, [])]
            active = [k for k in keys if k["active"]]
            console = login is not None
            password_used = days_since(user.get("PasswordLastUsed"))
            return {
                "console_access": console, "mfa_enabled": bool(mfa), "access_keys": keys,
                "mfa_hardware": any(not _virtual_mfa(str(d.get("SerialNumber", ""))) for d in mfa),
                "active_key_count": len(active),
                "max_active_key_age_days": max((k["age_days"] or 0 for k in active), default=None),
                "max_active_key_unused_days": max((k["unused_days"] or 0 for k in active), default=None),
                "active_keys_never_used": sum(1 for k in active if k["last_used_days"] is None),
                "password_last_used_days": password_used,
                "console_unused_days": (password_used if password_used is not None
                                        else days_since(user.get("CreateDate"))) if console else None,
                "attached_policies": [a.rsplit("/", 1)[-1] for a in attached],
                "inline_policies": sorted(inline), "direct_policies": bool(attached or inline),
                "groups": member_of, "admin_equivalent": bool(admin), "admin_via": admin,
                "escalation_actions": sorted({a for d in inline.values() for a in escalation_actions(d)}),
            }

        res.facts.update(ctx.guarded(res.path, describe, {}))

    roles: dict[str, list[str]] = {}
    for role in ctx.pages(iam, "list_roles", "Roles"):
        name = str(role["RoleName"])
        arn = str(role.get("Arn", ""))
        res = ctx.add("iam_role", name, arn, name=name,
                      service_linked=str(role.get("Path", "")).startswith("/aws-service-role/"),
                      **_trust_facts(policy_document(role.get("AssumeRolePolicyDocument")), ctx.account))

        def admin_of(name: str = name) -> list[str]:
            return _admin_sources(policies, _attached(ctx, iam, "role", name), _inline(ctx, iam, "role", name))

        admin = ctx.guarded(res.path, admin_of, [])
        roles[name] = admin
        res.facts.update(admin_equivalent=bool(admin), admin_via=admin)

    for profile in ctx.pages(iam, "list_instance_profiles", "InstanceProfiles"):
        name = str(profile["InstanceProfileName"])
        names = [str(r["RoleName"]) for r in profile.get("Roles", [])]
        via = [f"role:{r}:{s}" for r in names for s in roles.get(r, [])]
        ctx.add("instance_profile", name, str(profile.get("Arn", "")), role_names=names,
                role_admin=bool(via), admin_via=via)

    _account(ctx, iam, roles)


def _account(ctx: Context, iam: Any, roles: dict[str, list[str]]) -> None:
    policy = ctx.call(iam, "get_account_password_policy")
    pp = (policy or {}).get("PasswordPolicy") or {}
    ctx.add("password_policy", ctx.account, f"arn:{ctx.partition}:iam::{ctx.account}:account-password-policy",
            present=policy is not None, minimum_length=int(pp.get("MinimumPasswordLength", 0) or 0),
            require_symbols=bool(pp.get("RequireSymbols")), require_numbers=bool(pp.get("RequireNumbers")),
            require_uppercase=bool(pp.get("RequireUppercaseCharacters")),
            require_lowercase=bool(pp.get("RequireLowercaseCharacters")),
            reuse_prevention=int(pp.get("PasswordReusePrevention", 0) or 0),
            max_age_days=int(pp.get("MaxPasswordAge", 0) or 0), expire_passwords=bool(pp.get("ExpirePasswords")))

    summary = (ctx.call(iam, "get_account_summary") or {}).get("SummaryMap") or {}
    root = ctx.add("root_account", ctx.account, f"arn:{ctx.partition}:iam::{ctx.account}:root",
                   mfa_enabled=int(summary.get("AccountMFAEnabled", 0) or 0) == 1,
                   access_keys_present=int(summary.get("AccountAccessKeysPresent", 0) or 0) == 1)
    report = ctx.guarded(root.path, lambda: _credential_report(ctx, iam), None)
    if report is not None:
        row = next((r for r in report if r.get("user") == "<root_account>"), None)
        if row is not None:
            used = [days_since(row.get(k)) for k in ("password_last_used", "access_key_1_last_used_date",
                                                     "access_key_2_last_used_date")]
            known = [u for u in used if u is not None]
            root.facts["last_used_days"] = min(known) if known else None
            root.facts["access_keys_present"] = root.facts["access_keys_present"] or any(
                row.get(k) == "true" for k in ("access_key_1_active", "access_key_2_active"))
            root.facts["mfa_enabled"] = root.facts["mfa_enabled"] or row.get("mfa_active") == "true"
    virtual = ctx.pages(iam, "list_virtual_mfa_devices", "VirtualMFADevices")
    root.facts["virtual_mfa"] = any(str((d.get("User") or {}).get("Arn", "")).endswith(":root") for d in virtual)
    root.facts["hardware_mfa"] = root.facts["mfa_enabled"] and not root.facts["virtual_mfa"]

    support = ctx.call(iam, "list_entities_for_policy", PolicyArn=SUPPORT_POLICY)
    audit = ctx.call(iam, "list_entities_for_policy", PolicyArn=AUDIT_POLICY, EntityFilter="Role")
    saml = (ctx.call(iam, "list_saml_providers") or {}).get("SAMLProviderList", []) or []
    console_users = [r.id for r in ctx.result.resources if r.type == "iam_user" and r.facts.get("console_access")]
    ctx.add("iam_account", ctx.account, f"arn:{ctx.partition}:iam::{ctx.account}:account",
            support_role_present=bool(support and (support.get("PolicyRoles") or support.get("PolicyUsers")
                                                   or support.get("PolicyGroups"))),
            admin_role_count=sum(1 for v in roles.values() if v),
            security_audit_roles=sorted(str(r.get("RoleName")) for r in (audit or {}).get("PolicyRoles", []) or []),
            saml_provider_count=len(saml), console_user_count=len(console_users))


def _virtual_mfa(serial: str) -> bool:
    """Virtual and SMS devices are named by an ARN (…:mfa/NAME); hardware tokens by a serial number and
    FIDO keys by a …:u2f/ ARN."""
    return ":mfa/" in serial or ":sms-mfa/" in serial


def _credential_report(ctx: Context, iam: Any) -> list[dict[str, str]]:
    import time

    for _ in range(10):
        state = (ctx.call(iam, "generate_credential_report") or {}).get("State")
        if state == "COMPLETE":
            break
        time.sleep(1)
    answer = ctx.call(iam, "get_credential_report") or {}
    content = answer.get("Content", b"")
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    return list(csv.DictReader(io.StringIO(text)))
