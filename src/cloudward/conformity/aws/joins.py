"""Facts that need two services or many regions, for the checks added to answer Prowler's: S3
replicas in another region, VPCs in more than one region, AWS Backup coverage of volumes and DB
instances, SSM coverage of instances, and the organization-wide GuardDuty and Config set-up.

Pure functions over collected records (no I/O). A join only happens when the record it needs was
collected: a unit that failed leaves its facts out, and a rule never fires on a missing fact.
Coverage records belong to the service that decides them (backup, ssm, config), so a finding is
closed only when that service was read completely.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from cloudward.conformity.aws.model import GLOBAL, Resource

ByType = dict[str, list[Resource]]
CONFIG_PRINCIPALS = ("config.amazonaws.com", "config-multiaccountsetup.amazonaws.com")
GUARDDUTY_PRINCIPAL = "guardduty.amazonaws.com"


def s3_replication(by_type: ByType) -> None:
    """A bucket replicates elsewhere when an enabled rule copies it to a bucket in another region (or
    another account); a bucket that is itself a replica is the copy, not the original."""
    buckets = {r.id: r for r in by_type.get("s3_bucket", [])}
    for bucket in buckets.values():
        if "replication_destinations" not in bucket.facts:
            continue
        far = []
        for name in bucket.facts["replication_destinations"]:
            other = buckets.get(name)
            if other is None or other.facts.get("bucket_region") != bucket.facts.get("bucket_region"):
                far.append(name)
            if other is not None:
                other.facts.setdefault("replica_of", []).append(bucket.id)
        bucket.facts["replicates_cross_region"] = bool(far)
    for bucket in buckets.values():
        if "replication_destinations" in bucket.facts:
            bucket.facts.setdefault("replica_of", [])


def vpc_regions(by_type: ByType) -> list[Resource]:
    """One account record: in which scanned regions are there VPCs of the account's own (not default)."""
    scanned = sorted({r.region for r in by_type.get("ebs_defaults", [])})
    if not scanned:
        return []
    own = sorted({v.region for v in by_type.get("vpc", []) if not v.facts.get("is_default")})
    account = by_type["ebs_defaults"][0].account
    return [Resource(service="ec2", type="vpc_account", id=account, region=GLOBAL, account=account,
                     arn=f"arn:aws:ec2::{account}:vpc-regions",
                     facts={"regions_scanned": scanned, "regions_scanned_count": len(scanned),
                            "custom_vpc_regions": own, "custom_vpc_region_count": len(own)})]


def _tags_match(conditions: list[dict[str, str]], tags: dict[str, str]) -> bool:
    if not conditions:
        return False

    def one(cond: dict[str, str]) -> bool:
        value, op = tags.get(cond["key"]), cond["op"]
        if op == "equals":
            return value == cond["value"]
        if op == "like":
            return value is not None and fnmatchcase(value, cond["value"])
        if op == "not_equals":
            return value != cond["value"]
        return value is None or not fnmatchcase(value, cond["value"])

    any_of = [c for c in conditions if c["join"] == "any"]
    all_of = [c for c in conditions if c["join"] == "all"]
    return (not any_of or any(one(c) for c in any_of)) and all(one(c) for c in all_of)


def selection_covers(selection: dict[str, Any], arn: str, tags: dict[str, str]) -> bool:
    """Does a backup selection take this resource: named (or matched by a wildcard) in Resources, or
    chosen by its tags, and not excluded by NotResources."""
    if any(fnmatchcase(arn, pattern) for pattern in selection.get("not_resources", [])):
        return False
    resources = selection.get("resources", [])
    tag_conditions = selection.get("tags", [])
    named = any(pattern == "*" or fnmatchcase(arn, pattern) for pattern in resources)
    if resources and tag_conditions:  # both given: a resource must be named and carry the tags
        return named and _tags_match(tag_conditions, tags)
    return named or _tags_match(tag_conditions, tags)


def backup_coverage(by_type: ByType) -> list[Resource]:
    regions = {r.region: r for r in by_type.get("backup_region", [])}
    out = []
    for kind in ("volume", "rds_instance"):
        for res in by_type.get(kind, []):
            plans = regions.get(res.region)
            if plans is None or not res.arn:
                continue
            tags = res.facts.get("tags") or {}
            covering = sorted({f"{s['plan']}/{s['selection']}" for s in plans.facts.get("selections", [])
                               if selection_covers(s, res.arn, tags)})
            out.append(Resource(service="backup", type="backup_coverage", id=res.id, region=res.region,
                                account=res.account, arn=res.arn,
                                facts={"resource_type": kind, "protected": bool(covering),
                                       "covering_selections": covering,
                                       "plans_in_region": plans.facts.get("plan_count", 0)}))
    return out


def ssm_coverage(by_type: ByType) -> list[Resource]:
    regions = {r.region: r for r in by_type.get("ssm_region", [])}
    out = []
    for inst in by_type.get("instance", []):
        managed = regions.get(inst.region)
        if managed is None:
            continue
        status = (managed.facts.get("managed_instances") or {}).get(inst.id)
        out.append(Resource(service="ssm", type="ssm_instance", id=inst.id, region=inst.region,
                            account=inst.account, arn=inst.arn,
                            facts={"managed": status is not None, "ping_status": status or "",
                                   "running": bool(inst.facts.get("running")),
                                   "state": inst.facts.get("state", "")}))
    return out


def organization_wide(by_type: ByType) -> list[Resource]:
    """Hand the organization's facts to GuardDuty's regions, and build Config's account record."""
    org = next(iter(by_type.get("organization", [])), None)
    delegated: dict[str, list[str]] | None = None
    if org is not None:
        if not org.facts.get("in_organization"):
            delegated = {}  # a standalone account: nobody can be delegated anything
        elif "delegated_services" in org.facts:
            delegated = org.facts["delegated_services"]
    for region in by_type.get("guardduty_region", []):
        if org is not None:
            region.facts["in_organization"] = bool(org.facts.get("in_organization"))
        if delegated is not None and "delegated_admins" not in region.facts:
            region.facts["delegated_admins"] = delegated.get(GUARDDUTY_PRINCIPAL, [])
        if "delegated_admins" in region.facts:
            region.facts["delegated_admin_count"] = len(region.facts["delegated_admins"])
            region.facts.setdefault("self_delegated_admin", region.account in region.facts["delegated_admins"])
    regions = by_type.get("config_region", [])
    if not regions:
        return []
    account = regions[0].account
    aggregators = sorted({f"{r.region}:{name}" for r in regions
                          for name in r.facts.get("org_aggregators_all_regions", [])})
    facts: dict[str, Any] = {"org_aggregators": aggregators, "org_aggregator": bool(aggregators)}
    if org is not None:
        facts["in_organization"] = bool(org.facts.get("in_organization"))
    if delegated is not None:
        admins = sorted({a for p in CONFIG_PRINCIPALS for a in delegated.get(p, [])})
        facts.update(config_delegated_admins=admins, config_delegated_admin=bool(admins))
    return [Resource(service="config", type="config_account", id=account, region=GLOBAL, account=account,
                     arn=f"arn:aws:config::{account}:organization-aggregation", facts=facts)]
