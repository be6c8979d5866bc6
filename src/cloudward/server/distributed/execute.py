"""What a worker does with a message: run a job, or scan one chunk of a distributed scan.

`run_job`: claim the job row (queued -> running, compare-and-set, so a job runs once however many
copies of its message exist). An `exposure scan` job is planned and sent out as chunks; the job
stays `running` until the merge of its last chunk closes it. Any other allow-listed command runs
as the server's `LocalRunner` would run it: a `cloudward` subprocess on this worker.

`run_chunk`: skip a chunk already merged (a duplicate), scan its hosts in-process with the
exposure pipeline, merge the result into the parent scan (`assemble.py`), and close the job when
that merge finished the scan. A job cancelled through the API stops its chunks: those not started
merge as `cancelled` without scanning, a running one is cancelled within a second and merges what
it found, and the scan ends `cancelled` (so it marks nothing fixed), like an interrupted local scan.

A message redelivered after its worker died finds its job `running` under its own task id and
picks it up where the store says it is; every step is safe to repeat.

Test hook: with `CLOUDWARD_WORKER_TEST_HOLD=DIR` in a worker's environment, each chunk, before it
scans, creates `DIR/started.<chunk>.<worker node>.<pid>` and waits (at most 5 minutes) for
`DIR/release` to exist. The tests use it to kill a worker while it provably holds a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cloudward.core.errors import InputError, UsageError
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.core.severity import Severity
from cloudward.exposure.evaluate import CompiledRule
from cloudward.server.db import ServerDB
from cloudward.server.distributed.assemble import distributed_block, merge_chunk
from cloudward.server.distributed.chunks import Chunk
from cloudward.server.distributed.plan import plan_exposure, scan_id_for_job
from cloudward.server.distributed.request import parse_exposure_words
from cloudward.server.distributed.settings import DistributedSettings
from cloudward.server.jobs.runner import CANCELLED, FAILED, RUNNING, SUCCEEDED, DatabaseJobs, JobInfo, job_info
from cloudward.store.models import JobRow
from cloudward.store.views import FindingQuery, ScanInfo

log = logging.getLogger("cloudward.distributed")
HOLD_ENV = "CLOUDWARD_WORKER_TEST_HOLD"
HOLD_LIMIT = 300.0
CANCEL_POLL = 1.0
EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 3, 130
_JOB_STATUS = {ScanStatus.COMPLETED: SUCCEEDED, ScanStatus.FAILED: FAILED, ScanStatus.CANCELLED: CANCELLED}


@dataclass
class WorkerContext:
    """One per worker process: its settings, its own store connection pool, its compiled rules."""

    settings: DistributedSettings
    db: ServerDB
    send: Callable[[Chunk], None]
    _rules: list[CompiledRule] | None = field(default=None, repr=False)

    @property
    def jobs(self) -> DatabaseJobs:
        return DatabaseJobs(self.db)

    def rules(self) -> list[CompiledRule]:
        """The built-in exposure rules, loaded and compiled once per process (the same rules
        `cloudward exposure scan` judges with)."""
        if self._rules is None:
            from cloudward.core.rules import load_rules
            from cloudward.exposure.evaluate import compile_rules, validate_rule

            self._rules = compile_rules(load_rules(["cloudward.exposure"], [], validators={"exposure": validate_rule}))
        return self._rules


# --- jobs -------------------------------------------------------------------------------------


def run_job(ctx: WorkerContext, job_id: str, *, task_id: str) -> None:
    owner = f"celery:{task_id}"[:200]
    if not ctx.jobs.claim(job_id, owner):
        with ctx.db.read() as session:
            row = session.execute(select(JobRow.status, JobRow.node).where(JobRow.id == job_id)).first()
        if row is None or row.status != RUNNING or row.node != owner:
            return  # final, cancelled before it started, or someone else's
        log.info("job %s: taking it up again after its worker was lost", job_id)
    with ctx.db.read() as session:
        argv = list(session.scalar(select(JobRow.argv).where(JobRow.id == job_id)) or [])
    if argv[:2] == ["exposure", "scan"]:
        start_exposure_job(ctx, job_id, argv[2:])
    else:
        run_subprocess_job(ctx, job_id, owner)


def start_exposure_job(ctx: WorkerContext, job_id: str, words: list[str]) -> None:
    scan_id = scan_id_for_job(job_id)
    try:
        request = parse_exposure_words(words)
        plan = plan_exposure(ctx.db.store, request, ctx.settings.exposure, scan_id=scan_id, job_id=job_id,
                             chunk_hosts=ctx.settings.chunk_hosts)
    except (UsageError, InputError) as exc:
        close_job(ctx.db, job_id, status=FAILED, exit_code=EXIT_USAGE, scan_id=None,
                  log_tail=f"error: {exc}\n", error=str(exc))
        return
    with ctx.db.write() as session:
        row = session.get(JobRow, job_id)
        if row is not None:
            row.scan_id = scan_id
    pending = plan.pending()
    for chunk in pending:
        ctx.send(chunk)
    log.info("job %s: exposure scan %s of %d hosts in %d chunks, %d sent", job_id, scan_id,
             plan.scan.stats.get("hosts", 0), len(plan.chunks), len(pending))
    if not pending:  # every chunk was merged before this (re)delivery: only the closing is left
        finish_job(ctx.db, job_id, plan.scan)


def run_subprocess_job(ctx: WorkerContext, job_id: str, owner: str) -> None:
    """Any other scan command: a subprocess, exactly as the server's own runner runs it. Its time
    limit stays under the broker's visibility timeout, so its message is never handed out again
    while it runs."""
    from cloudward.server.config import ServerConfig
    from cloudward.server.jobs.local import LocalRunner
    from cloudward.server.webhooks import Notifier

    limit = min(ctx.settings.job_timeout, max(60.0, ctx.settings.visibility_timeout - 60.0))
    config = ServerConfig(store_url=ctx.settings.store_url, data_dir=Path(ctx.settings.data_dir), secret_key=b"-",
                          job_slots=0, scheduler=False, job_timeout=limit, node=owner)
    runner = LocalRunner(ctx.db, config)
    runner.listeners.append(Notifier(ctx.db))
    runner.run_claimed(job_id)


def close_job(db: ServerDB, job_id: str, *, status: str, exit_code: int | None, scan_id: str | None, log_tail: str,
              error: str) -> JobInfo | None:
    """running -> final, once (compare-and-set); then the webhooks, as the server's runner does."""
    with db.write() as session:
        row = session.get(JobRow, job_id)
        if row is None or row.status != RUNNING:
            return None
        row.status, row.exit_code, row.finished = status, exit_code, db.clock()
        row.scan_id = scan_id or row.scan_id
        row.log_tail, row.error = log_tail[-8192:], error[:2000]
        info = job_info(row)
    from cloudward.server.webhooks import Notifier

    Notifier(db)(info)
    return info


def finish_job(db: ServerDB, job_id: str, scan: ScanInfo) -> JobInfo | None:
    """Close a job from its finished distributed scan, with the exit code the CLI would have had."""
    if scan.status is ScanStatus.RUNNING:
        return None
    block = distributed_block(scan.stats, scan.id)
    exit_code = {ScanStatus.FAILED: EXIT_FAILED, ScanStatus.CANCELLED: EXIT_INTERRUPTED}.get(scan.status, 0)
    threshold = block.get("fail_on")
    if exit_code == 0 and isinstance(threshold, str) and db.store.list_findings(FindingQuery(
            scan_id=scan.id, status="all", include_suppressed=True, min_severity=Severity.parse(threshold))):
        exit_code = 1
    workers = sorted(set(block.get("completed_by", {}).values()))
    summary = (f"distributed exposure scan {scan.id}: {scan.stats.get('hosts', 0)} hosts in {block['chunks']} "
               f"chunks on {len(workers)} worker(s) ({', '.join(workers)}); {scan.finding_count} findings, "
               f"{len(scan.errors)} errors; {scan.status.value}\n")
    error = ""
    if scan.status is ScanStatus.FAILED:
        error = f"{len(block.get('failed', []))} chunk(s) failed: see the scan's errors"
    elif scan.status is ScanStatus.CANCELLED:
        error = "cancelled"
    return close_job(db, job_id, status=_JOB_STATUS[scan.status], exit_code=exit_code, scan_id=scan.id,
                     log_tail=summary, error=error)


# --- chunks -----------------------------------------------------------------------------------


def run_chunk(ctx: WorkerContext, payload: Any, *, node: str) -> ScanInfo | None:
    """Scan and merge one chunk; None when it was a duplicate or its scan is gone."""
    chunk = Chunk.from_payload(payload)
    try:
        info = ctx.db.store.get_scan(chunk.scan_id)
    except UsageError:
        log.warning("chunk %s: scan %s is not in the store; dropped", chunk.index, chunk.scan_id)
        return None
    check_belongs(chunk, info)
    if chunk.index in distributed_block(info.stats, info.id).get("done", []) or info.status is not ScanStatus.RUNNING:
        if chunk.job_id and info.status is not ScanStatus.RUNNING:
            finish_job(ctx.db, chunk.job_id, info)  # a no-op unless the worker that finished it died first
        return None
    _hold(chunk, node)
    began = time.perf_counter()
    result = ScanResult(kind="exposure")
    if chunk.job_id and ctx.jobs.cancel_requested(chunk.job_id):
        result.finish(ScanStatus.CANCELLED)
    else:
        scan_hosts(ctx, chunk, result)
    scanned = time.perf_counter()
    merge = merge_chunk(ctx.db.store, chunk.scan_id, chunk.index, result, node)
    block = distributed_block(merge.info.stats, merge.info.id)
    log.info("scan %s chunk %d/%d: %d hosts, %d findings, %s (%d/%d merged); scan %.3fs, merge %.3fs",
             chunk.scan_id, chunk.index + 1, chunk.count, len(chunk.hosts), len(result.findings),
             "merged" if merge.merged else "already merged", len(block.get("done", [])), block["chunks"],
             scanned - began, time.perf_counter() - scanned)
    if merge.final and chunk.job_id:
        finish_job(ctx.db, chunk.job_id, merge.info)
    return merge.info


def check_belongs(chunk: Chunk, scan: ScanInfo) -> None:
    """A chunk scans only what its scan was planned to scan: its ports are the scan's, its hosts lie
    inside the scan's targets. Whoever can publish to the broker cannot point workers elsewhere
    without also writing the store."""
    from cloudward.exposure.targets import format_ports
    from cloudward.store.scope import parse_network_target

    if format_ports(chunk.ports) != scan.stats.get("ports") or chunk.count != distributed_block(
            scan.stats, scan.id).get("chunks"):
        raise InputError(f"chunk {chunk.index}: its ports or chunk count are not those of scan {scan.id}")
    targets = [t for t in map(parse_network_target, scan.targets) if t is not None]
    singles = {str(t.network.network_address) for t in targets
               if t.network is not None and t.network.num_addresses == 1}
    ranges = [t for t in targets if t.network is None or t.network.num_addresses > 1]
    for host in chunk.hosts:
        if host.address not in singles and not any(t.covers(host.address, None) for t in ranges):
            raise InputError(f"chunk {chunk.index}: host {host.address} is not among the targets of scan {scan.id}")


def scan_hosts(ctx: WorkerContext, chunk: Chunk, result: ScanResult) -> ScanResult:
    """The exposure pipeline on the chunk's hosts, in this process; cancelled within CANCEL_POLL
    seconds of the job's cancellation (`result` then holds what was found, marked cancelled)."""
    from cloudward.exposure.scanner import scan_async

    async def main() -> None:
        scan = asyncio.ensure_future(scan_async(chunk.targets(), chunk.ports, chunk.settings, ctx.rules(),
                                                result=result, max_open_per_host=chunk.max_open_per_host))
        while not scan.done():
            await asyncio.wait({scan}, timeout=CANCEL_POLL)
            if not scan.done() and chunk.job_id and await asyncio.to_thread(ctx.jobs.cancel_requested, chunk.job_id):
                scan.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scan

    asyncio.run(main())
    if result.finished is None:
        result.finish(ScanStatus.CANCELLED)
    return result


def fail_chunk(ctx: WorkerContext, payload: Any, reason: str, *, node: str) -> None:
    """Count a chunk that cannot be scanned (its retries are spent) as failed, so the scan ends."""
    from cloudward.server.distributed.assemble import fail_chunk as record_failure

    chunk = Chunk.from_payload(payload)
    merge = record_failure(ctx.db.store, chunk.scan_id, chunk.index, [h.address for h in chunk.hosts], reason, node)
    if merge.final and chunk.job_id:
        finish_job(ctx.db, chunk.job_id, merge.info)


def _hold(chunk: Chunk, node: str) -> None:
    folder = os.environ.get(HOLD_ENV)
    if not folder:
        return
    path = Path(folder)
    safe_node = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in node)[:100]
    (path / f"started.{chunk.index}.{safe_node}.{os.getpid()}").touch()
    deadline = time.monotonic() + HOLD_LIMIT
    while not (path / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)

