"""Terraform resources (from HCL or from a plan) turned into the facts the `iac` rules judge.

A resource arrives as its type, address and attribute mapping: nested blocks are lists of mappings,
and a value Terraform would only know at apply time is a string holding `${...}`. Such a value is
*unknown*: the fact it would decide is left out, so no rule fires on what the file does not say
(the condition language treats a missing fact as false). An attribute that is absent takes
the provider's documented default, because that is what `terraform apply` would create.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

WORLD = frozenset({"0.0.0.0/0", "::/0"})
# Ports crews scan for first: SSH, the Docker Engine API (plain and TLS), etcd, Redis, the kubelet.
SENSITIVE_PORTS = (22, 2375, 2376, 2379, 6379, 10250)
PUBLIC_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
_BUCKET_REFERENCE = re.compile(r'\$\{aws_s3_bucket\.([A-Za-z_][A-Za-z0-9_-]*)(\[(?:"[^"]*"|[0-9]+)\])?')
POLICY_RESOURCES = ("aws_iam_policy", "aws_iam_role_policy", "aws_iam_user_policy", "aws_iam_group_policy")


@dataclass
class TfResource:
    type: str
    name: str
    address: str
    attrs: dict[str, Any]
    path: str
    line: int
    mode: str = "managed"  # or "data"
    skip_at: tuple[tuple[str, int], ...] = ()  # where skip comments for it may sit
    module: str = ""  # "path:line (module.x)" of the module call that brought it in
    block_lines: dict[str, int] = field(default_factory=dict)  # "ingress[0]" -> its line (HCL only)


def unknown(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def truth(value: Any) -> bool | None:
    """True/False for a literal boolean (or its string form), None when not known."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def flag(attrs: Mapping[str, Any], name: str, default: bool) -> bool | None:
    if name not in attrs or attrs[name] is None:
        return default
    return truth(attrs[name])


def blocks(attrs: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = attrs.get(name)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


# --- security groups -----------------------------------------------------------------------------

def _ingress_facts(resource_type: str, cidrs: list[Any], from_port: Any, to_port: Any,
                   protocol: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {"resource_type": resource_type}
    known_cidrs = [c for c in cidrs if isinstance(c, str) and not unknown(c)]
    facts["cidrs"] = known_cidrs
    facts["open_to_world"] = any(c.strip() in WORLD for c in known_cidrs)
    proto = str(protocol).lower() if protocol is not None and not unknown(protocol) else None
    if proto is None:
        return facts
    facts["protocol"] = proto
    low, high = port(from_port), port(to_port)
    all_protocols = proto in ("-1", "all")
    if all_protocols:
        facts["all_ports"] = True
        return facts
    if low is None or high is None:
        return facts
    facts["from_port"], facts["to_port"] = low, high
    facts["all_ports"] = low <= 1 and high >= 65535
    if proto in ("tcp", "6") and not facts["all_ports"]:
        facts["exposed_ports"] = [p for p in SENSITIVE_PORTS if low <= p <= high]
    return facts


def _ingress(resource: TfResource) -> Iterator[tuple[str, dict[str, Any], str]]:
    attrs = resource.attrs
    if resource.type == "aws_security_group":
        for index, rule in enumerate(blocks(attrs, "ingress")):
            cidrs = strings(rule.get("cidr_blocks")) + strings(rule.get("ipv6_cidr_blocks"))
            yield "tf_ingress", _ingress_facts(resource.type, cidrs, rule.get("from_port"), rule.get("to_port"),
                                               rule.get("protocol")), f"ingress[{index}]"
    elif resource.type == "aws_security_group_rule":
        if attrs.get("type") != "ingress":
            return
        cidrs = strings(attrs.get("cidr_blocks")) + strings(attrs.get("ipv6_cidr_blocks"))
        yield "tf_ingress", _ingress_facts(resource.type, cidrs, attrs.get("from_port"), attrs.get("to_port"),
                                           attrs.get("protocol")), ""
    elif resource.type == "aws_vpc_security_group_ingress_rule":
        cidrs = strings(attrs.get("cidr_ipv4")) + strings(attrs.get("cidr_ipv6"))
        yield "tf_ingress", _ingress_facts(resource.type, cidrs, attrs.get("from_port"), attrs.get("to_port"),
                                           attrs.get("ip_protocol")), ""


# --- IAM policies --------------------------------------------------------------------------------

def _policy_document(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and not unknown(value):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    value = document.get("Statement", document.get("statement"))
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [s for s in value if isinstance(s, dict)]
    return []


def _field(statement: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in statement:
            return statement[name]
    return None


def _policy_facts(statements: list[dict[str, Any]], source: str) -> dict[str, Any]:
    admin = 0
    not_action = 0
    service_wildcards: set[str] = set()
    for statement in statements:
        effect = _field(statement, "Effect", "effect")
        if effect is not None and str(effect).lower() != "allow":
            continue
        actions = [a.lower() for a in strings(_field(statement, "Action", "actions"))]
        resources = strings(_field(statement, "Resource", "resources"))
        on_everything = "*" in resources
        if on_everything and ("*" in actions or "*:*" in actions):
            admin += 1
        if on_everything and strings(_field(statement, "NotAction", "not_actions")):
            not_action += 1
        service_wildcards.update(a for a in actions if a.endswith(":*") and a != "*:*")
    return {"source": source, "statements": len(statements), "admin_statements": admin,
            "not_action_statements": not_action, "service_wildcards": sorted(service_wildcards),
            "iam_wildcard": "iam:*" in service_wildcards}


def _principals(statement: Mapping[str, Any]) -> list[str]:
    principal = _field(statement, "Principal", "principals")
    if isinstance(principal, str):
        return [principal]
    if isinstance(principal, dict):
        return [p for v in principal.values() for p in strings(v)]
    if isinstance(principal, list):  # policy document data source: principals { type, identifiers }
        return [i for block in principal if isinstance(block, dict) for i in strings(block.get("identifiers"))]
    return []


def _public_principal_statements(statements: list[dict[str, Any]]) -> int:
    count = 0
    for statement in statements:
        effect = _field(statement, "Effect", "effect")
        if effect is not None and str(effect).lower() != "allow":
            continue
        if "*" in _principals(statement) and not _field(statement, "Condition", "condition"):
            count += 1
    return count


def _iam(resource: TfResource) -> Iterator[tuple[str, dict[str, Any], str]]:
    attrs = resource.attrs
    if resource.mode == "data" and resource.type == "aws_iam_policy_document":
        yield "tf_iam_policy", _policy_facts(blocks(attrs, "statement"), resource.type), ""
        return
    if resource.mode != "managed":
        return
    if resource.type in POLICY_RESOURCES:
        document = _policy_document(attrs.get("policy"))
        if document is not None:
            yield "tf_iam_policy", _policy_facts(_statements(document), resource.type), ""
    if resource.type == "aws_iam_role":
        for index, inline in enumerate(blocks(attrs, "inline_policy")):
            document = _policy_document(inline.get("policy"))
            if document is not None:
                yield "tf_iam_policy", _policy_facts(_statements(document), "aws_iam_role.inline_policy"), \
                    f"inline_policy[{index}]"
        trust = _policy_document(attrs.get("assume_role_policy"))
        if trust is not None:
            yield "tf_iam_trust", {"public_principal_statements": _public_principal_statements(_statements(trust))}, \
                "trust"
    if resource.type in ("aws_s3_bucket_policy",):
        document = _policy_document(attrs.get("policy"))
        if document is not None:
            yield "tf_bucket_policy", {
                "public_principal_statements": _public_principal_statements(_statements(document))}, ""


# --- the rest, one subject per resource type -----------------------------------------------------

def _put(facts: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        facts[name] = value


def _imds(attrs: Mapping[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    options = blocks(attrs, "metadata_options")
    if "metadata_options" in attrs and not options:
        return facts  # a dynamic or unknown block: say nothing
    first = options[0] if options else {}
    tokens = first.get("http_tokens")
    endpoint = first.get("http_endpoint")
    if unknown(tokens) or unknown(endpoint):
        return facts
    facts["http_tokens"] = tokens if tokens is not None else "optional (default)"
    facts["http_endpoint"] = endpoint if endpoint is not None else "enabled (default)"
    facts["imdsv1_allowed"] = tokens != "required" and endpoint != "disabled"
    return facts


def _volumes(attrs: Mapping[str, Any], default_encrypted: bool) -> list[str]:
    """Names of the instance's EBS volumes that would be created unencrypted."""
    out = []
    for kind in ("root_block_device", "ebs_block_device"):
        for index, device in enumerate(blocks(attrs, kind)):
            value = flag(device, "encrypted", default_encrypted)
            if value is False:
                out.append(f"{kind}[{index}]")
    if not blocks(attrs, "root_block_device") and not default_encrypted and "ami" in attrs:
        out.append("root_block_device (not declared: unencrypted unless the AMI is)")
    return out


def _simple(resource: TfResource, context: Mapping[str, Any]) -> dict[str, Any] | None:
    t, attrs = resource.type, resource.attrs
    facts: dict[str, Any] = {}
    if t == "aws_instance":
        facts.update(_imds(attrs))
        facts["ebs_default_encryption"] = bool(context.get("ebs_default_encryption"))
        facts["unencrypted_volumes"] = _volumes(attrs, bool(context.get("ebs_default_encryption")))
        _put(facts, "associate_public_ip_address", truth(attrs.get("associate_public_ip_address")))
    elif t in ("aws_launch_template", "aws_launch_configuration"):
        facts.update(_imds(attrs))
    elif t == "aws_ebs_volume":
        facts["ebs_default_encryption"] = bool(context.get("ebs_default_encryption"))
        _put(facts, "encrypted", flag(attrs, "encrypted", bool(context.get("ebs_default_encryption"))))
    elif t == "aws_s3_bucket":
        acl = attrs.get("acl")
        if isinstance(acl, str) and not unknown(acl):
            facts["acl"] = acl
            facts["public_acl"] = acl in PUBLIC_ACLS
        name = attrs.get("bucket")
        facts["bucket"] = name if isinstance(name, str) else resource.name
        instance = resource.name + resource.address.rsplit(f"{t}.{resource.name}", 1)[-1]  # b or b["logs"]
        facts["public_access_block"] = bool(context.get("account_public_access_block")) or (
            resource.name in context.get("blocked_buckets", set())
            or instance in context.get("blocked_buckets", set())
            or (isinstance(name, str) and name in context.get("blocked_buckets", set())))
    elif t == "aws_s3_bucket_acl":
        acl = attrs.get("acl")
        if isinstance(acl, str) and not unknown(acl):
            facts["acl"] = acl
            facts["public_acl"] = acl in PUBLIC_ACLS
    elif t in ("aws_s3_bucket_public_access_block", "aws_s3_account_public_access_block"):
        off = []
        for name in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
            value = flag(attrs, name, False)
            if value is False:
                off.append(name)
        facts["disabled_settings"] = off
        facts["resource_type"] = t
        t = "aws_s3_bucket_public_access_block"
    elif t == "aws_db_instance":
        _put(facts, "publicly_accessible", flag(attrs, "publicly_accessible", False))
        _put(facts, "storage_encrypted", flag(attrs, "storage_encrypted", False))
        engine = attrs.get("engine")
        if isinstance(engine, str):
            facts["engine"] = engine
        # Aurora instances inherit encryption from their cluster: judge the cluster instead.
        if isinstance(engine, str) and engine.startswith("aurora"):
            facts.pop("storage_encrypted", None)
    elif t == "aws_rds_cluster":
        _put(facts, "storage_encrypted", flag(attrs, "storage_encrypted", False))
    elif t == "aws_eks_cluster":
        vpc = blocks(attrs, "vpc_config")
        config = vpc[0] if vpc else {}
        public = flag(config, "endpoint_public_access", True)
        cidrs = config.get("public_access_cidrs", ["0.0.0.0/0"])
        _put(facts, "endpoint_public_access", public)
        if not unknown(cidrs) and isinstance(cidrs, list) and not any(unknown(c) for c in cidrs):
            facts["public_access_cidrs"] = cidrs
            if public is not None:
                facts["public_endpoint_open_to_world"] = public and any(str(c) in WORLD for c in cidrs)
        facts["secrets_encryption"] = bool(blocks(attrs, "encryption_config"))
    elif t == "aws_ecr_repository":
        scanning = blocks(attrs, "image_scanning_configuration")
        _put(facts, "scan_on_push", flag(scanning[0], "scan_on_push", False) if scanning else False)
        mutability = attrs.get("image_tag_mutability", "MUTABLE")
        if isinstance(mutability, str) and not unknown(mutability):
            facts["image_tag_mutability"] = mutability
    elif t == "aws_cloudtrail":
        _put(facts, "is_multi_region_trail", flag(attrs, "is_multi_region_trail", False))
        _put(facts, "enable_logging", flag(attrs, "enable_logging", True))
        _put(facts, "enable_log_file_validation", flag(attrs, "enable_log_file_validation", False))
    else:
        return None
    facts["__subject"] = t
    return facts


def tree_context(resources: list[TfResource]) -> dict[str, Any]:
    """Facts that depend on other resources of the same configuration: an S3 bucket is guarded
    by a public access block that names it, EBS volumes by account-wide default encryption."""
    blocked: set[str] = set()
    context: dict[str, Any] = {"blocked_buckets": blocked}
    for resource in resources:
        attrs = resource.attrs
        if resource.type == "aws_s3_bucket_public_access_block":
            bucket = attrs.get("bucket")
            if isinstance(bucket, str):
                blocked.add(bucket)
                reference = _BUCKET_REFERENCE.match(bucket)
                if reference:
                    # `aws_s3_bucket.b["logs"].id` guards that instance, `aws_s3_bucket.b.id` (or an
                    # index only apply knows) every instance of b
                    blocked.add(reference.group(1) + (reference.group(2) or ""))
        elif resource.type == "aws_s3_account_public_access_block":
            context["account_public_access_block"] = True
        elif resource.type == "aws_ebs_encryption_by_default" and flag(attrs, "enabled", True):
            context["ebs_default_encryption"] = True
    return context


def observe(resource: TfResource, context: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(subject, facts, key suffix) for each judgeable part of a resource."""
    yield from _ingress(resource)
    yield from _iam(resource)
    if resource.mode == "managed":
        facts = _simple(resource, context)
        if facts is not None:
            subject = facts.pop("__subject")
            yield subject, facts, ""
