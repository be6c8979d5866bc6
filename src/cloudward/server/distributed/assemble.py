"""A distributed scan assembled in the store, one chunk at a time, each chunk counted once.

The parent scan is an ordinary `scans` row from the moment it is planned (status `running`), with
the targets, ports and scope of the whole scan, and a `stats["distributed"]` block that says how
many chunks there are and which are done. A chunk is merged by re-recording the parent through
`Store.record_scan` with everything it held plus the chunk's findings and errors, the chunk's
counters added to the totals and its index added to `done` — one transaction, so the chunk's
findings, the scan's membership and its completion mark land together or not at all.

Why this gives the same store as a local scan of the same targets:
- findings are upserted by fingerprint and the scan's membership (`scan_findings`) is the union
  of the chunks' findings, which is what the local scan would have seen;
- a chunk whose index is already in `done` is not merged again (a message redelivered after its
  worker died having merged it, or handed out twice by the broker), so nothing is counted twice;
- while chunks are missing the scan stays `running`, and `record_scan` marks nothing fixed for a
  scan that is not `completed`; the merge of the last chunk records it `completed` (or `failed` /
  `cancelled` when a chunk was), and that one recording closes fixed findings, once, with the
  scan's own targets, ports and errors — exactly the local rule.

Merges of one scan are serialised by a PostgreSQL advisory lock keyed by the scan id, held from
reading the scan to committing it, on a connection of its own; a worker that dies holding it
drops its connection and PostgreSQL releases the lock.

Cost: each merge re-reads the scan's findings so far, so a scan of C chunks with F findings does
about C x F row reads in total. Chunks are capped (256 per scan) to keep that bounded.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cloudward.core.errors import StoreError, UsageError
from cloudward.core.finding import Finding, utcnow
from cloudward.core.scan import ScanResult, ScanStatus, TargetError
from cloudward.store.engine import mask_url, scrub
from cloudward.store.repository import Store
from cloudward.store.views import FindingQuery, ScanInfo

# Counters every chunk reports and the scan reports as sums.
SUMMED = ("ports_probed", "open", "closed", "filtered", "hosts_up", "identified", "unidentified")
# Settings-derived numbers: the same for every chunk of a scan, copied from any.
COPIED = ("concurrency", "identify_concurrency", "discovery_workers", "rate")
_LOCK_CLASS = 0x636C6F75  # 'clou': the two-key advisory space, apart from the store's one-key locks


@dataclass(frozen=True)
class Merge:
    info: ScanInfo
    merged: bool  # False: this chunk had been merged already (a duplicate delivery)

    @property
    def final(self) -> bool:
        return self.info.status is not ScanStatus.RUNNING


def distributed_block(stats: dict[str, Any], scan_id: str) -> dict[str, Any]:
    block = stats.get("distributed")
    if not isinstance(block, dict) or not isinstance(block.get("chunks"), int):
        raise UsageError(f"scan {scan_id} is not a distributed scan")
    return block


def initial_stats(*, hosts: int, ports: str, port_count: int, chunks: int, chunk_hosts: int,
                  job_id: str | None, fail_on: str | None, resolved: dict[str, list[str]] | None) -> dict[str, Any]:
    stats: dict[str, Any] = {"hosts": hosts, "ports": ports, "port_count": port_count,
                             **dict.fromkeys(SUMMED, 0), "findings": 0}
    if resolved:
        stats["resolved"] = resolved
    stats["distributed"] = {"chunks": chunks, "chunk_hosts": chunk_hosts, "done": [], "failed": [],
                            "cancelled": [], "completed_by": {}, "job": job_id, "fail_on": fail_on}
    return stats


def merged_stats(parent: dict[str, Any], chunk: ScanResult, index: int, node: str) -> dict[str, Any]:
    """The parent's stats with one more chunk counted (pure: the tests call it directly)."""
    stats = copy.deepcopy(parent)
    block = distributed_block(stats, "?")
    for key in SUMMED:
        value = chunk.stats.get(key, 0)
        stats[key] = int(stats.get(key, 0)) + (int(value) if isinstance(value, int | float) else 0)
    for key in COPIED:
        if key in chunk.stats:
            stats[key] = chunk.stats[key]
    block["done"] = sorted({*block.get("done", []), index})
    if chunk.status is ScanStatus.FAILED:
        block["failed"] = sorted({*block.get("failed", []), index})
    elif chunk.status is ScanStatus.CANCELLED:
        block["cancelled"] = sorted({*block.get("cancelled", []), index})
    block.setdefault("completed_by", {})[str(index)] = node[:200]
    return stats


def final_status(block: dict[str, Any]) -> ScanStatus:
    if block.get("failed"):
        return ScanStatus.FAILED
    if block.get("cancelled"):
        return ScanStatus.CANCELLED
    return ScanStatus.COMPLETED


@contextmanager
def scan_lock(engine: Engine, scan_id: str) -> Iterator[None]:
    """Hold the scan's merge lock (PostgreSQL; other backends are single-process and get none)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = int.from_bytes(hashlib.sha256(scan_id.encode()).digest()[:4], "big", signed=True)
    params = {"a": _LOCK_CLASS, "b": key}
    conn = None
    try:
        conn = engine.connect()
        conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), params)
        conn.commit()
    except SQLAlchemyError as exc:
        if conn is not None:
            conn.invalidate()
            conn.close()
        reason = str(getattr(exc, "orig", None) or exc).split("\n")[0]
        raise StoreError(f"findings store {mask_url(engine.url)}: cannot lock scan {scan_id}: "
                         f"{scrub(reason, engine.url)}") from None
    try:
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), params)
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()  # closing the session releases the lock; never pool a connection holding it
        finally:
            conn.close()


def scan_members(store: Store, scan_id: str) -> list[Finding]:
    """Every finding the scan holds so far, suppressed ones included."""
    query = FindingQuery(scan_id=scan_id, status="all", include_suppressed=True)
    return [item.finding for item in store.list_findings(query)]


def create_parent(store: Store, result: ScanResult) -> ScanInfo:
    """Record the parent scan unless it exists (a re-planned job keeps what its chunks merged)."""
    with scan_lock(store.engine, result.id):
        try:
            return store.get_scan(result.id)
        except UsageError:
            pass
        store.record_scan(result)
        return store.get_scan(result.id)


def merge_chunk(store: Store, scan_id: str, index: int, chunk: ScanResult, node: str,
                clock: Any = utcnow) -> Merge:
    """Fold one chunk's result into the parent scan, once; finalise the scan with the last chunk."""
    with scan_lock(store.engine, scan_id):
        info = store.get_scan(scan_id)
        block = distributed_block(info.stats, scan_id)
        if index in block.get("done", []) or info.status is not ScanStatus.RUNNING:
            return Merge(info, merged=False)
        findings = {f.fingerprint: f for f in scan_members(store, scan_id)}
        for finding in chunk.findings:
            findings[finding.fingerprint] = finding
        stats = merged_stats(info.stats, chunk, index, node)
        block = stats["distributed"]
        status, finished = ScanStatus.RUNNING, None
        if len(block["done"]) >= block["chunks"]:
            status, finished = final_status(block), clock()
            stats["duration"] = round(max(0.0, (finished - info.started).total_seconds()), 3)
        stats["findings"] = len(findings)
        store.record_scan(ScanResult(
            id=scan_id, kind=info.kind, started=info.started, finished=finished, status=status,
            targets=list(info.targets), errors=[*info.errors, *chunk.errors], findings=list(findings.values()),
            stats=stats))
        return Merge(store.get_scan(scan_id), merged=True)


def fail_chunk(store: Store, scan_id: str, index: int, addresses: Sequence[str], reason: str, node: str) -> Merge:
    """A chunk that could not be scanned at all: counted, failed, and its hosts named as errors (so
    nothing on them is ever taken for fixed)."""
    from cloudward.exposure.scanner import host_target

    result = ScanResult(kind="exposure", status=ScanStatus.FAILED,
                        errors=[TargetError(target=host_target(a), message=reason[:500], stage="distributed")
                                for a in addresses])
    return merge_chunk(store, scan_id, index, result, node)


def pending_chunks(info: ScanInfo) -> list[int]:
    block = distributed_block(info.stats, info.id)
    done = set(block.get("done", []))
    return [i for i in range(block["chunks"]) if i not in done]
