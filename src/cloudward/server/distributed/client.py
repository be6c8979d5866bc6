"""`cloudward exposure scan --distributed`: the command line as one more job submitter.

The scan becomes a job row in the shared store, exactly as if it came through the API (so it is
listed, audited and cancellable there too), its id goes to the broker, and this process waits for
the workers to finish it; then the scan is read back from the store for the report. Ctrl-C
cancels the job (the workers stop within a second and the scan is recorded `cancelled`); a
second Ctrl-C stops waiting. The report is the stored scan: its findings, errors and stats, but no
`inventory` (the store keeps findings, not every service identified).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudward.core.errors import ScanError, UsageError
from cloudward.core.scan import ScanResult
from cloudward.server.audit import Actor
from cloudward.server.db import ServerDB
from cloudward.server.distributed.app import create_celery, send_job
from cloudward.server.distributed.assemble import scan_members
from cloudward.server.distributed.settings import load
from cloudward.server.jobs.commands import JobCommand
from cloudward.server.jobs.runner import FAILED, DatabaseJobs, JobInfo

POLL_SECONDS = 0.1


def scan_words(targets: Sequence[str], *, ports: str, concurrency: int | None, rate: float | None,
               timeout: float | None, max_hosts: int | None, allow_large_range: bool, max_open_per_host: int,
               fail_on: str | None) -> list[str]:
    """The `exposure scan` words a job carries for these options (what `request.py` reads back)."""
    words = [*targets, "--ports", ports]
    for option, value in (("--concurrency", concurrency), ("--rate", rate), ("--timeout", timeout),
                          ("--max-hosts", max_hosts), ("--fail-on", fail_on)):
        if value is not None:
            words += [option, str(value)]
    if allow_large_range:
        words.append("--allow-large-range")
    return [*words, "--max-open-per-host", str(max_open_per_host)]


def run_distributed(words: Sequence[str], *, store_url: str, data_dir: Path, broker: str | None, actor: str,
                    on_update: Callable[[JobInfo, dict[str, Any] | None], None] | None = None) -> ScanResult:
    """Submit `exposure scan WORDS` to the workers, wait, and return the stored scan."""
    settings = load(store_url, data_dir, broker=broker)
    db = ServerDB.open(settings.store_url)
    app = create_celery(settings)
    try:
        jobs = DatabaseJobs(db)
        who = Actor(actor)
        job = jobs.submit(JobCommand(("exposure", "scan", *words)), actor=who)
        send_job(app, job.id)
        job = _wait(db, jobs, job, who, on_update)
        if job.scan_id is None:
            raise (UsageError if job.exit_code == 2 else ScanError)(
                f"distributed scan job {job.id} {job.status}: {job.error or 'no scan was recorded'}")
        scan = db.store.get_scan(job.scan_id)
        if job.status == FAILED and not scan.finished:
            raise ScanError(f"distributed scan job {job.id} failed: {job.error}")
        return scan.to_result(scan_members(db.store, scan.id))
    finally:
        app.close()
        db.close()


def _wait(db: ServerDB, jobs: DatabaseJobs, job: JobInfo, who: Actor,
          on_update: Callable[[JobInfo, dict[str, Any] | None], None] | None) -> JobInfo:
    cancelled = False
    while True:
        try:
            while not job.done:
                time.sleep(POLL_SECONDS)
                job = jobs.status(job.id)
                if on_update is not None:
                    on_update(job, _progress(db, job))
            return job
        except KeyboardInterrupt:
            if cancelled:
                raise
            cancelled = True
            job = jobs.cancel(job.id, actor=who)


def _progress(db: ServerDB, job: JobInfo) -> dict[str, Any] | None:
    if job.scan_id is None:
        return None
    try:
        block = db.store.get_scan(job.scan_id).stats.get("distributed")
    except UsageError:
        return None
    return block if isinstance(block, dict) else None
