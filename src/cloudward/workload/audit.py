"""Orchestration of a host audit: collectors -> observations -> host rules -> one `ScanResult`.

Every collector runs in isolation: an exception in one (a parser meeting binary garbage, a file
vanishing mid-read) becomes an error naming the collector and the audit goes on, keeping every
finding already made. Ctrl-C marks the scan cancelled with what was found so far.

After the collectors, one step that is not a collector: `options["advisories"]` (the advisory
database's path, which `host audit` always passes) turns on the check of the installed packages for
published security fixes (`workload/vulns.py`; its stats are `stats["packages"]`). It is named
`packages` for `only`, and callers that pass no database path (library use, tests of collectors)
do not run it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from cloudward.core.finding import Target
from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.engines.iocs import Iocs, load_iocs
from cloudward.workload.collectors import CollectorSpec, all_collectors
from cloudward.workload.evaluate import compile_rules, evaluate
from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.root import HostRoot
from cloudward.workload.vulns import STEP as PACKAGES_STEP
from cloudward.workload.vulns import check_packages

__all__ = ["host_target", "run_audit"]


def host_target(root: HostRoot) -> Target:
    """The live machine by its name; an offline root by its path (it may be any machine's disk)."""
    if root.live:
        return Target(kind="host", name=socket.gethostname())
    return Target(kind="host", name=f"root:{root.path}")


def run_audit(
    root: HostRoot,
    rules: Iterable[Rule],
    *,
    iocs: Iocs | None = None,
    collectors: Sequence[CollectorSpec] | None = None,
    only: Sequence[str] = (),
    processes: bool = True,
    options: dict[str, Any] | None = None,
) -> ScanResult:
    """Audit `root` with the host rules; `only` limits the run to the named collectors."""
    result = ScanResult(kind="host", targets=[str(root.path)])
    target = host_target(root)
    compiled = compile_rules(rules)
    specs = list(collectors) if collectors is not None else all_collectors()
    advisories = (options or {}).get("advisories")
    if only:
        unknown = set(only) - {s.name for s in specs} - {PACKAGES_STEP}
        if unknown:
            raise ValueError(f"unknown collectors: {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in only]
        if PACKAGES_STEP not in only:
            advisories = None

    def error(item: str, message: str, stage: str = "") -> None:
        result.add_error(item, message, stage)

    ctx = HostContext(root=root, iocs=iocs if iocs is not None else load_iocs(), processes=processes,
                      error=error, options=dict(options or {}))
    if not root.looks_like_root():
        result.add_error(str(root.path), "no /etc here: this does not look like the root of a system; "
                         "only what is present was audited", "root")
    per_collector: dict[str, dict[str, float | int]] = {}
    seen = 0
    # A partial audit (some collectors not run, or one that failed) must not mark the findings of
    # the missing ones fixed in the store (store/scope.py reads this flag).
    partial = bool(only) or (root.live and not processes)
    try:
        for spec in specs:
            if spec.live_only and not (root.live and processes):
                continue
            started = time.perf_counter()
            count = 0
            try:
                for observation in spec.collect(ctx):
                    count += 1
                    result.findings.extend(evaluate(observation, compiled, target, str(root.path)))
                    _inventory(result, observation)
            except Exception as exc:  # one broken collector must not cost the others' findings
                result.add_error(f"collector {spec.name}", f"{type(exc).__name__}: {exc}", "collect")
                partial = True
            seen += count
            per_collector[spec.name] = {"observations": count,
                                        "seconds": round(time.perf_counter() - started, 3)}
        if advisories is not None:
            try:
                found, package_stats = check_packages(root, advisories, target, error)
            except Exception as exc:  # like a collector: reported, and the audit keeps its findings
                result.add_error(f"step {PACKAGES_STEP}", f"{type(exc).__name__}: {exc}", PACKAGES_STEP)
                partial = True
            else:
                result.findings.extend(found)
                result.stats[PACKAGES_STEP] = package_stats
    except KeyboardInterrupt:
        result.stats.update(observations=seen, collectors=per_collector, partial=True)
        return result.finish(ScanStatus.CANCELLED)
    result.stats.update(observations=seen, collectors=per_collector, partial=partial)
    return result.finish()


def _inventory(result: ScanResult, observation: HostObservation) -> None:
    """A few subjects are worth listing even when no rule fires (what the audit saw)."""
    if observation.subject == "host":
        result.inventory.append({"kind": "host", **dict(observation.facts)})
