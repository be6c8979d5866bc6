"""The exposure scan: discovery -> identification -> rules, into one `ScanResult`.

Phase 1 (`discovery.py`) connect-scans every (host, port) with a global concurrency limit and an
optional rate; it hands over each host once all its ports were tried. A host answering on more
than `max_open_per_host` ports is a tarpit, a proxy or a firewall answering for everything: it
gets one scan error, and only its first N open ports (well-known service ports first) go on.
Phase 2 (`identify.py`) runs with its own, smaller concurrency, overlapping with discovery of
later hosts. Each observation goes to `result.inventory` and is judged by the exposure rules
(compiled once); findings are appended the moment they are made, so a cancelled scan keeps every
finding it already had and is marked `cancelled` — the store then knows not to mark anything
fixed on the strength of it.

Everything per-target that goes wrong is a `scan.errors` entry naming `host:port` (or the host);
only a bug in the scanner itself makes the scan `failed`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import aclosing
from datetime import date, datetime
from typing import Any

from cloudward.core.config import ExposureSettings, Settings
from cloudward.core.errors import UsageError
from cloudward.core.finding import Finding
from cloudward.core.progress import Progress
from cloudward.core.progress import progress as progress_bar
from cloudward.core.rules import Rule, RuleSet
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.exposure.discovery import DiscoveryStats, discover, fd_capped_concurrency
from cloudward.exposure.evaluate import CompiledRule, compile_rules, evaluate
from cloudward.exposure.identify import Identification, Identifier, bounded_message, escape_bytes
from cloudward.exposure.local import Listener
from cloudward.exposure.net import Limits
from cloudward.exposure.probes.base import Observation, Probe
from cloudward.exposure.targets import TEAMTNT_PORTS, Host, Targets, format_ports, parse_ports, parse_targets

log = logging.getLogger(__name__)

IDENTIFY_CONCURRENCY = 64
MAX_OPEN_PER_HOST = 256
BUDGET_FACTOR = 3  # per-port identification budget = probe_timeout x this
FDS_PER_IDENTIFICATION = 3  # a probe holds at most a couple of connections at once
MAX_FACT_STRING = 4096
MAX_FACT_ITEMS = 200
MAX_FACT_DEPTH = 8

RulesLike = RuleSet | Iterable[Rule] | Sequence[CompiledRule] | None
BindInfo = Mapping[tuple[str, int], str]


def exposure_settings(settings: Settings | ExposureSettings) -> ExposureSettings:
    return settings.exposure if isinstance(settings, Settings) else settings


def probe_limits(settings: ExposureSettings) -> Limits:
    """Per-read bounds for probes, derived from the per-probe timeout (5 s gives 3 s reads)."""
    return Limits(
        connect_timeout=min(settings.connect_timeout, settings.probe_timeout),
        io_timeout=max(0.2, settings.probe_timeout * 0.6),
        max_bytes=settings.max_response_bytes,
    )


def json_safe(value: Any, depth: int = 0) -> Any:
    """Facts as plain JSON values, bounded: probes read hostile servers, reports must not break."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_FACT_STRING else value[:MAX_FACT_STRING] + "..."
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        return escape_bytes(bytes(value), MAX_FACT_STRING)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if depth >= MAX_FACT_DEPTH:
        return escape_bytes(repr(value).encode("utf-8", "replace"))
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_FACT_ITEMS]
        return {str(k): json_safe(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in list(value)[:MAX_FACT_ITEMS]]
    return escape_bytes(str(value).encode("utf-8", "replace"))


def _compiled(rules: RulesLike) -> list[CompiledRule]:
    if rules is None:
        return []
    items = list(rules)
    if items and all(isinstance(r, CompiledRule) for r in items):
        return items  # type: ignore[return-value]
    return compile_rules(r for r in items if isinstance(r, Rule))


def host_target(address: str) -> str:
    """A host-level error target spelled like the prefix of its endpoints (`[::1]` of `[::1]:22`),
    so the store knows which findings the error concerns."""
    return f"[{address}]" if ":" in address else address


def _hint_ports(probes: Sequence[Probe]) -> frozenset[int]:
    hinted: set[int] = set(TEAMTNT_PORTS)
    for probe in probes:
        hinted.update(probe.ports)
    return frozenset(hinted)


def _default_probes() -> tuple[Probe, ...]:
    from cloudward.exposure.probes.registry import all_probes

    return all_probes()


class _Scan:
    """The state of one running scan; `run` drives both phases."""

    def __init__(self, result: ScanResult, settings: ExposureSettings, rules: list[CompiledRule],
                 probes: Sequence[Probe], progress: Progress, max_open_per_host: int,
                 identify_concurrency: int, bind_info: BindInfo | None) -> None:
        self.result = result
        self.settings = settings
        self.rules = rules
        self.progress = progress
        self.max_open_per_host = max(1, max_open_per_host)
        self.identify_concurrency = max(1, identify_concurrency)
        self.bind_info = dict(bind_info or {})
        self.identifier = Identifier(probes, probe_limits(settings),
                                     budget=settings.probe_timeout * BUDGET_FACTOR)
        self.hint_ports = _hint_ports(probes)
        self.discovery = DiscoveryStats()
        self.counts = {"identified": 0, "unidentified": 0, "queued": 0}
        self.total = 0
        self.started = time.monotonic()

    # -- phase 1 -> phase 2 hand-over --------------------------------------------------------

    def _select(self, host: Host, open_ports: list[int]) -> list[int]:
        """All open ports, or for a host answering on too many, the first N (hint ports first)."""
        limit = self.max_open_per_host
        if len(open_ports) <= limit:
            return open_ports
        chosen = sorted(open_ports, key=lambda p: (p not in self.hint_ports, p))[:limit]
        self.result.add_error(
            host_target(host.address),
            f"answered on {len(open_ports)} ports, more than --max-open-per-host {limit}: probably a "
            f"tarpit, a proxy or a firewall accepting every connection; identified only {limit} of "
            "them (well-known service ports first)",
            stage="discovery",
        )
        return chosen

    def _discovery_error(self, host: str, message: str) -> None:
        self.result.add_error(host_target(host), bounded_message(message), stage="discovery")

    # -- phase 2 -----------------------------------------------------------------------------

    def _enrich(self, observation: Observation, host: Host) -> dict[str, Any]:
        """Facts the scanner knows and the probe cannot: the name used, where the socket is bound."""
        extra: dict[str, Any] = {}
        if host.name:
            observation.facts.setdefault("hostname", host.name)
        bound = self.bind_info.get((host.address, observation.port))
        if bound is not None:
            observation.facts["listen_address"] = bound
            observation.facts["listens_on_all_interfaces"] = bound in ("0.0.0.0", "::")  # noqa: S104
            extra["listen_address"] = bound
        if host.name:
            extra["hostname"] = host.name
        return extra

    def _record(self, host: Host, port: int, outcome: Identification) -> None:
        endpoint = host.endpoint(port)
        for error in outcome.errors:
            self.result.add_error(endpoint, error.message, stage=error.stage)
        observation = outcome.observation
        if observation is None:
            return
        self.counts["identified" if outcome.identified else "unidentified"] += 1
        location_extra = self._enrich(observation, host)
        entry: dict[str, Any] = {"endpoint": endpoint, "service": observation.service,
                                 "tls": observation.tls}
        if host.name:
            entry["name"] = host.name
        entry["facts"] = json_safe(observation.facts)
        self.result.inventory.append(entry)
        if not outcome.examined:
            return  # recognised but not read: no rule may judge facts nobody saw
        findings: list[Finding] = evaluate(observation, self.rules)
        for finding in findings:
            finding.location.update(location_extra)
            self.result.findings.append(finding)

    async def _identify(self, host: Host, port: int) -> None:
        try:
            outcome = await self.identifier.identify(host.address, port)
        except Exception as exc:  # a bug in the walk: one port's error, not the scan's end
            log.exception("identification of %s crashed", host.endpoint(port))
            self.result.add_error(host.endpoint(port), bounded_message(
                f"internal error while identifying: {type(exc).__name__}: {exc}"), stage="identify")
            return
        try:
            self._record(host, port, outcome)
        except Exception as exc:
            log.exception("evaluating %s crashed", host.endpoint(port))
            self.result.add_error(host.endpoint(port), bounded_message(
                f"internal error while evaluating rules: {type(exc).__name__}: {exc}"), stage="evaluate")

    # -- driver ------------------------------------------------------------------------------

    async def run(self, groups: Iterable[tuple[Host, Sequence[int]]], total: int) -> None:
        settings = self.settings
        concurrency = fd_capped_concurrency(settings.concurrency,
                                            self.identify_concurrency * FDS_PER_IDENTIFICATION)
        self.total = total
        self.progress.total(total)
        self.progress.describe("exposure: discovering open ports")
        jobs: asyncio.Queue[tuple[Host, int] | None] = asyncio.Queue(maxsize=self.identify_concurrency * 4)

        async def produce() -> None:
            stream = discover(groups, concurrency=concurrency, connect_timeout=settings.connect_timeout,
                              attempts=total,
                              rate=settings.rate, stats=self.discovery, on_probed=self.progress.advance,
                              on_error=self._discovery_error)
            async with aclosing(stream) as found:
                async for host, open_ports in found:
                    selected = self._select(host, open_ports)
                    self.counts["queued"] += len(selected)
                    self.progress.total(self.total + self.counts["queued"])
                    for port in selected:
                        await jobs.put((host, port))
            self.progress.describe("exposure: identifying services")
            for _ in range(self.identify_concurrency):
                await jobs.put(None)

        async def identify_worker() -> None:
            while (job := await jobs.get()) is not None:
                await self._identify(*job)
                self.progress.advance()

        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(self.identify_concurrency):
                group.create_task(identify_worker())

    def stats(self, hosts: int, ports: Sequence[int]) -> dict[str, Any]:
        d = self.discovery
        return {
            "hosts": hosts,
            "ports": format_ports(ports),  # the store reads this to know which ports were covered
            "port_count": len(ports),
            "ports_probed": d.probed,
            "open": d.open,
            "closed": d.closed,
            "filtered": d.filtered,
            "hosts_up": d.hosts_up,
            "identified": self.counts["identified"],
            "unidentified": self.counts["unidentified"],
            "findings": len(self.result.findings),
            "duration": round(time.monotonic() - self.started, 3),
            "concurrency": d.concurrency,
            "identify_concurrency": self.identify_concurrency,
            "discovery_workers": d.workers,
            "rate": self.settings.rate,
        }


async def _drive(result: ScanResult, groups: Iterable[tuple[Host, Sequence[int]]], total: int,
                 hosts: int, ports: Sequence[int], settings: ExposureSettings, rules: RulesLike,
                 progress: Progress | None, probes: Sequence[Probe] | None, max_open_per_host: int,
                 identify_concurrency: int, bind_info: BindInfo | None) -> ScanResult:
    with progress_bar("exposure scan", enabled=False) as silent:
        scan = _Scan(result, settings, _compiled(rules),
                     probes if probes is not None else _default_probes(),
                     progress if progress is not None else silent, max_open_per_host,
                     identify_concurrency, bind_info)
        try:
            await scan.run(groups, total)
        except asyncio.CancelledError:
            result.stats.update(scan.stats(hosts, ports))
            result.finish(ScanStatus.CANCELLED)
            raise
        except Exception as exc:  # a scanner bug: keep what was found, say what broke
            log.exception("exposure scan failed")
            detail = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) and exc.exceptions else exc
            result.add_error("scan", bounded_message(f"internal error: {type(detail).__name__}: {detail}"),
                             stage="scan")
            result.stats.update(scan.stats(hosts, ports))
            return result.finish(ScanStatus.FAILED)
        result.stats.update(scan.stats(hosts, ports))
        return result.finish(ScanStatus.COMPLETED)


def prepare(
    targets: Targets | Iterable[str],
    ports: Sequence[int] | str,
    settings: Settings | ExposureSettings,
    allow_large: bool = False,
) -> tuple[Targets, tuple[int, ...]]:
    """Parse targets and ports unless already parsed (UsageError on bad input or oversize)."""
    conf = exposure_settings(settings)
    parsed = targets if isinstance(targets, Targets) else parse_targets(
        list(targets), max_hosts=conf.max_hosts, allow_large=allow_large)
    port_list = parse_ports(ports) if isinstance(ports, str) else tuple(sorted(set(ports)))
    if not port_list:
        raise UsageError("empty port list")
    return parsed, port_list


async def scan_async(
    targets: Targets | Iterable[str],
    ports: Sequence[int] | str,
    settings: Settings | ExposureSettings,
    ruleset: RulesLike,
    progress: Progress | None = None,
    *,
    result: ScanResult | None = None,
    probes: Sequence[Probe] | None = None,
    max_open_per_host: int = MAX_OPEN_PER_HOST,
    identify_concurrency: int = IDENTIFY_CONCURRENCY,
    bind_info: BindInfo | None = None,
    allow_large: bool = False,
    kind: str = "exposure",
) -> ScanResult:
    """Scan every named host on every port; return the finished `ScanResult`.

    Pass `result` to keep a handle on it: if the task is cancelled, the same object is finished as
    `cancelled` with every finding made so far, and CancelledError propagates.
    """
    conf = exposure_settings(settings)
    parsed, port_list = prepare(targets, ports, conf, allow_large)
    if result is None:
        result = ScanResult(kind=kind)
    if not result.targets:
        result.targets = parsed.labels()
    if parsed.resolved():
        result.stats["resolved"] = parsed.resolved()
    groups = ((host, port_list) for host in parsed)
    return await _drive(result, groups, parsed.size * len(port_list), parsed.size, port_list, conf, ruleset,
                        progress, probes, max_open_per_host, identify_concurrency, bind_info)


def _run_sync(result: ScanResult, make: Any, progress: Progress | None, total: int) -> ScanResult:
    """Run a coroutine factory to completion; Ctrl-C returns the result marked cancelled."""
    try:
        if progress is not None:
            asyncio.run(make(progress))
        else:
            with progress_bar("exposure scan", total=total) as bar:
                asyncio.run(make(bar))
    except KeyboardInterrupt:
        if result.finished is None:
            result.finish(ScanStatus.CANCELLED)
    return result


def scan(
    targets: Targets | Iterable[str],
    ports: Sequence[int] | str,
    settings: Settings | ExposureSettings,
    ruleset: RulesLike,
    progress: Progress | None = None,
    **options: Any,
) -> ScanResult:
    """Blocking `scan_async` with a progress bar on a terminal. On Ctrl-C it returns the partial
    result with status `cancelled` instead of raising, so the caller can still report and store."""
    conf = exposure_settings(settings)
    parsed, port_list = prepare(targets, ports, conf, options.pop("allow_large", False))
    result: ScanResult = options.pop("result", None) or ScanResult(kind=options.pop("kind", "exposure"))

    def make(bar: Progress) -> Any:
        return scan_async(parsed, port_list, conf, ruleset, bar, result=result, **options)

    return _run_sync(result, make, progress, parsed.size * len(port_list))


def local_groups(listeners: Iterable[Listener | tuple[str, int]]) -> tuple[list[tuple[Host, list[int]]],
                                                                          dict[tuple[str, int], str]]:
    """Listeners grouped per address to connect to, and where each one is actually bound."""
    by_host: dict[str, set[int]] = {}
    bind_info: dict[tuple[str, int], str] = {}
    for item in listeners:
        address, port = item[0], item[1]
        by_host.setdefault(address, set()).add(port)
        if isinstance(item, Listener):
            bind_info[(address, port)] = item.bind
    return [(Host(address), sorted(ports)) for address, ports in by_host.items()], bind_info


async def scan_local_async(
    listeners: Iterable[Listener | tuple[str, int]],
    settings: Settings | ExposureSettings,
    ruleset: RulesLike,
    progress: Progress | None = None,
    *,
    result: ScanResult | None = None,
    probes: Sequence[Probe] | None = None,
    max_open_per_host: int = MAX_OPEN_PER_HOST,
    identify_concurrency: int = IDENTIFY_CONCURRENCY,
    bind_info: BindInfo | None = None,
    kind: str = "audit",
) -> ScanResult:
    """Scan exactly the given (address, port) listeners of this machine (see `local.py`).

    Each `Listener`'s bind address becomes the facts `listen_address` and
    `listens_on_all_interfaces` of its observation (and `location.listen_address` of its
    findings); `bind_info` adds or overrides such entries for plain (address, port) pairs.
    """
    groups, bound = local_groups(listeners)
    if result is None:
        result = ScanResult(kind=kind)
    if not result.targets:
        result.targets = [host.endpoint(port) for host, ports in groups for port in ports]
    ports = sorted({port for _, host_ports in groups for port in host_ports})
    total = sum(len(host_ports) for _, host_ports in groups)
    return await _drive(result, groups, total, len(groups), ports, exposure_settings(settings), ruleset,
                        progress, probes, max_open_per_host, identify_concurrency,
                        {**bound, **(bind_info or {})})


def scan_local(
    listeners: Iterable[Listener | tuple[str, int]],
    settings: Settings | ExposureSettings,
    ruleset: RulesLike,
    progress: Progress | None = None,
    **options: Any,
) -> ScanResult:
    """Blocking `scan_local_async` for `cloudward audit`; Ctrl-C returns a cancelled result."""
    items = list(listeners)
    result: ScanResult = options.pop("result", None) or ScanResult(kind=options.pop("kind", "audit"))

    def make(bar: Progress) -> Any:
        return scan_local_async(items, settings, ruleset, bar, result=result, **options)

    return _run_sync(result, make, progress, len(items))
