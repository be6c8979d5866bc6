"""Planning a distributed exposure scan: expand the targets once, cut them into chunks, and record
the parent scan before any chunk is sent.

Planning is deterministic for a job: the scan id derives from the job id, and the same targets
and settings cut into the same chunks, so a job whose planner died half-way through sending is
simply planned again — the parent scan is found, not recreated, and only the chunks not yet done
are sent (a chunk sent twice is merged once).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from cloudward.core.config import ExposureSettings
from cloudward.core.errors import UsageError
from cloudward.core.finding import utcnow
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.exposure.scanner import prepare
from cloudward.exposure.targets import format_ports, parse_targets
from cloudward.server.distributed.assemble import create_parent, distributed_block, initial_stats
from cloudward.server.distributed.chunks import MAX_PAYLOAD_HOSTS, Chunk, hosts_per_chunk, split_hosts
from cloudward.server.distributed.request import ExposureRequest
from cloudward.server.distributed.settings import MAX_CHUNKS
from cloudward.store.repository import Store
from cloudward.store.views import ScanInfo

_NAMESPACE = uuid.UUID("6f1d8f0e-3c55-4b8e-9a57-0c1a0d5e7c11")
_FLAGS = {"concurrency": "--concurrency", "rate": "--rate", "probe_timeout": "--timeout", "max_hosts": "--max-hosts"}


@dataclass(frozen=True)
class Plan:
    scan: ScanInfo
    chunks: tuple[Chunk, ...]

    def pending(self) -> list[Chunk]:
        done = set(distributed_block(self.scan.stats, self.scan.id).get("done", []))
        return [c for c in self.chunks if c.index not in done]


def scan_id_for_job(job_id: str) -> str:
    """The parent scan of a job's distributed scan: fixed by the job, so re-planning finds it."""
    return uuid.uuid5(_NAMESPACE, f"job:{job_id}").hex


def exposure_settings(base: Mapping[str, Any], request: ExposureRequest) -> ExposureSettings:
    """The worker's `[exposure]` settings with the request's options, validated like the CLI's."""
    data = ExposureSettings.model_validate(dict(base)).model_dump() if base else ExposureSettings().model_dump()
    data.update(request.overrides())
    try:
        return ExposureSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_FLAGS.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
        raise UsageError(problems) from None


def plan_exposure(store: Store, request: ExposureRequest, base: Mapping[str, Any], *, scan_id: str,
                  chunk_hosts: int, job_id: str | None = None, max_chunks: int = MAX_CHUNKS,
                  clock: Callable[[], datetime] = utcnow) -> Plan:
    """Expand, cut, record the parent scan (or find it); UsageError for anything wrong with the request."""
    exposure = exposure_settings(base, request)
    parsed = parse_targets(list(request.targets), max_hosts=exposure.max_hosts, allow_large=request.allow_large_range)
    parsed, ports = prepare(parsed, request.ports, exposure)
    if parsed.size > MAX_PAYLOAD_HOSTS:
        raise UsageError(f"targets cover {parsed.size:,} addresses; a distributed scan takes at most "
                         f"{MAX_PAYLOAD_HOSTS:,} (split the targets over several scans)")
    per_chunk = hosts_per_chunk(parsed.size, chunk_hosts, max_chunks)
    groups = list(split_hosts(parsed, per_chunk))
    stats = initial_stats(hosts=parsed.size, ports=format_ports(ports), port_count=len(ports), chunks=len(groups),
                          chunk_hosts=per_chunk, job_id=job_id, fail_on=request.fail_on, resolved=parsed.resolved())
    parent = ScanResult(id=scan_id, kind="exposure", started=clock(), status=ScanStatus.RUNNING,
                        targets=parsed.labels(), stats=stats)
    info = create_parent(store, parent)
    recorded = distributed_block(info.stats, scan_id)
    if recorded["chunks"] != len(groups):
        raise UsageError(f"scan {scan_id} was planned as {recorded['chunks']} chunks and now makes {len(groups)}: "
                         "its targets resolve differently than when it started")
    chunks = tuple(Chunk(scan_id, index, len(groups), hosts, ports, exposure, request.max_open_per_host, job_id)
                   for index, hosts in enumerate(groups))
    return Plan(info, chunks)
