"""The account posture scan: collect every (service, region) once in a bounded thread pool, link
facts across services, judge every resource with the `aws` rules, and fill a ScanResult.

    session -> units (service x region) -> resources -> link -> rules -> findings

A unit that fails (AccessDenied, an API the endpoint does not offer, a malformed answer) becomes an
error naming the service, region, call and permission; the other units' findings are kept. Scope
for the findings store: each unit is a target `aws/<account>/<region>/<service>`; a finding's
`location.path` is the resource's path under it, so a complete scan closes the findings of fixed
resources in the units it covered, never those of a unit (or resource) that errored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from cloudward.conformity.aws import joins
from cloudward.conformity.aws.collectors import ALIASES, COLLECTORS
from cloudward.conformity.aws.collectors._base import Context
from cloudward.conformity.aws.model import GLOBAL, CollectError, Collector, Resource, UnitResult, dedupe, unit_scope
from cloudward.core.errors import UsageError
from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.engines.subject_rules import compile_rules
from cloudward.engines.subject_rules import evaluate as evaluate_subject

ENGINE = "aws"
SCAN_KIND = "conformity-aws"


def parse_services(text: str | None) -> list[str]:
    if not text or text.strip() == "all":
        return list(COLLECTORS)
    names = dedupe(ALIASES.get(n.strip().lower(), n.strip().lower()) for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in COLLECTORS]
    if unknown:
        raise UsageError(f"--services: unknown service(s) {', '.join(unknown)} (choose from {', '.join(COLLECTORS)})")
    return names


def resolve_regions(session: Any, text: str | None) -> list[str]:
    if not text:
        return [session.home_region]
    if text.strip() == "all":
        try:
            return list(session.enabled_regions())
        except UsageError:
            raise
        except Exception as exc:  # botocore errors: no region list means nothing to scan
            raise UsageError(f"--regions all: cannot list regions (ec2:DescribeRegions): {exc}") from None
    regions = dedupe(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in regions if not r.replace("-", "").isalnum()]
    if not regions or bad:
        raise UsageError(f"--regions: not region names: {text!r}")
    return regions


@dataclass
class AccountScan:
    account: str
    regions: list[str]
    services: list[str]
    units: list[UnitResult] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False

    @property
    def resources(self) -> list[Resource]:
        return [r for u in self.units for r in u.resources]

    @property
    def errors(self) -> list[CollectError]:
        return [e for u in self.units for e in u.errors]


def run_unit(session: Any, collector: Collector, region: str) -> UnitResult:
    """Collect one service in one region; every failure becomes an error of this unit."""
    result = UnitResult(service=collector.service, region=region)
    ctx = Context(session, collector.service, region, result)
    try:
        collector.collect(ctx)
    except CollectError as exc:
        result.errors.append(exc)
        result.failed = True
    except Exception as exc:  # a hostile or malformed answer must not cost the other services
        call = result.last_operation or "?"
        result.errors.append(CollectError(service=collector.service, region=region, operation=call,
                                          code="MalformedResponse",
                                          message=f"unexpected answer ({type(exc).__name__}: {str(exc)[:200]})"))
        result.failed = True
    return result


def collect_account(session: Any, regions: list[str], services: list[str], *, concurrency: int = 8,
                    on_unit: Callable[[UnitResult], None] | None = None) -> AccountScan:
    scan = AccountScan(account=session.account, regions=list(regions), services=list(services))
    units = [(COLLECTORS[s], r) for s in services for r in (regions if COLLECTORS[s].regional else [GLOBAL])]
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(units))), thread_name_prefix="cw-aws")
    pending: set[Future[UnitResult]] = {pool.submit(run_unit, session, c, r) for c, r in units}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                unit = future.result()
                scan.units.append(unit)
                if on_unit is not None:
                    on_unit(unit)
    except KeyboardInterrupt:
        scan.cancelled = True
        pool.shutdown(wait=False, cancel_futures=True)
    finally:
        pool.shutdown(wait=not scan.cancelled)
    scan.units.sort(key=lambda u: (u.service, u.region))
    scan.seconds = time.monotonic() - started
    return scan


# --- facts that need more than one service ---------------------------------------------------------


def link(resources: list[Resource]) -> list[Resource]:
    """Join facts across services (pure: also used on hand-built records). Returns resources that
    only exist at account level (e.g. whether any multi-region trail logs), to be judged too."""
    by_type: dict[str, list[Resource]] = {}
    for res in resources:
        by_type.setdefault(res.type, []).append(res)
    profiles = {r.arn: r for r in by_type.get("instance_profile", [])}
    groups = {(r.region, r.id): r for r in by_type.get("security_group", [])}
    for inst in by_type.get("instance", []):
        profile = profiles.get(str(inst.facts.get("instance_profile_arn", "")))
        if profile is not None:
            inst.facts["role_names"] = profile.facts.get("role_names", [])
            inst.facts["role_admin"] = bool(profile.facts.get("role_admin"))
            inst.facts["role_admin_via"] = profile.facts.get("admin_via", [])
        elif not inst.facts.get("instance_profile_arn"):
            inst.facts["role_admin"] = False
        sgs = [groups[(inst.region, g)] for g in inst.facts.get("security_group_ids", []) if (inst.region, g) in groups]
        if sgs:
            inst.facts["world_open_ports"] = sorted({p for g in sgs for p in g.facts.get("world_open_ports", [])})
            inst.facts["world_open_all_ports"] = any(g.facts.get("world_open_all_ports") for g in sgs)
            inst.facts["world_open"] = any(g.facts.get("world_open") for g in sgs)

    buckets = {r.id: r for r in by_type.get("s3_bucket", [])}
    trails = by_type.get("trail", [])
    for trail in trails:
        bucket = buckets.get(str(trail.facts.get("s3_bucket", "")))
        if bucket is not None:
            for fact in ("public", "access_logging"):
                if fact in bucket.facts:
                    trail.facts[f"bucket_{fact}"] = bucket.facts[fact]
    logging = [t for t in trails if t.facts.get("logging")]
    for region in by_type.get("cloudtrail_region", []):
        covering = [t for t in logging if t.facts.get("multi_region") or t.region == region.region]
        region.facts["logging_trails"] = sorted(t.id for t in covering)
        region.facts["logged"] = bool(covering)
    extra: list[Resource] = []
    joins.s3_replication(by_type)
    extra += joins.vpc_regions(by_type)
    extra += joins.backup_coverage(by_type)
    extra += joins.ssm_coverage(by_type)
    extra += joins.organization_wide(by_type)
    if by_type.get("cloudtrail_region"):
        sample = by_type["cloudtrail_region"][0]
        good = [t.id for t in logging if t.facts.get("multi_region") and t.facts.get("management_events_all", True)]
        # data events count when a logging multi-region trail records them (a single-region trail
        # misses the buckets and functions of the other regions)
        wide = [t for t in logging if t.facts.get("multi_region")]
        events = {fact: sorted(t.id for t in wide if t.facts.get(fact))
                  for fact in ("s3_object_read_events", "s3_object_write_events", "lambda_invoke_events")}
        # Bedrock calls count on any logging trail that records them (Prowler's reading too)
        events["bedrock_events"] = sorted(t.id for t in logging if t.facts.get("bedrock_events"))
        extra.append(Resource(service="cloudtrail", type="cloudtrail_account", id=sample.account, region=GLOBAL,
                              account=sample.account, arn=f"arn:aws:cloudtrail::{sample.account}:account",
                              facts={"multi_region_logging_trails": sorted(good),
                                     "multi_region_logging": bool(good), "trail_count": len(trails),
                                     **{f"{fact}_trails": ids for fact, ids in events.items()},
                                     **{f"{fact}_logged": bool(ids) for fact, ids in events.items()}}))
    return extra


# --- judging ----------------------------------------------------------------------------------------


class Judge:
    """The `aws` rules compiled once, grouped by subject (resource type)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = [r for r in rules if r.engine_name == ENGINE]
        self.compiled = compile_rules(self.rules, ENGINE)

    def findings(self, resources: Iterable[Resource]) -> list[Finding]:
        out: list[Finding] = []
        for res in resources:
            if res.type not in self.compiled:
                continue
            location = {"path": res.path, "account": res.account, "region": res.region, "service": res.service,
                        "resource_type": res.type, "resource_id": res.id}
            target = Target(kind="resource", name=res.name)
            out.extend(evaluate_subject(res.type, res.all_facts(), self.compiled, target, location=location,
                                        key=res.path))
        return out


def to_result(scan: AccountScan, judge: Judge, result: ScanResult | None = None) -> ScanResult:
    """Link, judge and report one collected account into a ScanResult."""
    resources = scan.resources
    extra = link(resources)
    result = result or ScanResult(kind=SCAN_KIND)
    result.targets = [unit_scope(scan.account, u.region, u.service) for u in scan.units]
    complete_services = {s for s in scan.services if all(not u.failed for u in scan.units if u.service == s)}
    for res in extra:  # account-level records built by `link` are covered when their service was complete
        if res.service in complete_services:
            result.targets.append(unit_scope(scan.account, res.region, res.service))
    result.findings = judge.findings([*resources, *extra])
    for error in scan.errors:
        target = error.resource or unit_scope(scan.account, error.region, error.service)
        result.add_error(target, str(error), stage=error.service)
    failed_units = [u for u in scan.units if u.failed]
    per_type: dict[str, int] = {}
    for res in resources:
        per_type[res.type] = per_type.get(res.type, 0) + 1
    result.stats = {
        "account": scan.account, "regions": scan.regions, "services": scan.services,
        "units": len(scan.units), "failed_units": [f"{u.service}/{u.region}" for u in failed_units],
        "resources": len(resources), "resource_types": dict(sorted(per_type.items())),
        "api_calls": sum(u.calls for u in scan.units), "rules": len(judge.rules),
        "seconds": round(scan.seconds, 3), "partial": bool(failed_units or scan.errors),
    }
    if scan.cancelled:
        result.finish(ScanStatus.CANCELLED)
    elif scan.units and len(failed_units) == len(scan.units):
        result.finish(ScanStatus.FAILED)
    else:
        result.finish(ScanStatus.COMPLETED)
    return result


def resource_records(items: Iterable[Mapping[str, Any]]) -> list[Resource]:
    """Resources from plain dicts (fixtures, `--input` files): service, type, id, region, account, arn, facts."""
    out = []
    for item in items:
        out.append(Resource(service=str(item["service"]), type=str(item["type"]), id=str(item["id"]),
                            region=str(item.get("region", GLOBAL)), account=str(item.get("account", "")),
                            arn=str(item.get("arn", "")), facts=dict(item.get("facts", {}))))
    return out
