"""The runner inside `cloudward server`: a fixed number of worker threads, each claiming queued
jobs from the table and running them as subprocesses (execute.py).

Bounded concurrency is the number of threads (`--jobs N`, default 2); with 0 the server only
queues, and another server or worker executes. Workers wake at once for a job submitted here and
poll the table otherwise, so a job queued by another server (or the scheduler) is picked up too.
When a server dies mid-job its rows stay `running`: on start, a runner marks the jobs of dead
processes on this host as failed, since nobody will ever finish them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import replace

from sqlalchemy import select

from cloudward.core.errors import CloudwardError
from cloudward.server.config import ServerConfig
from cloudward.server.db import ServerDB
from cloudward.server.errors import NotFound
from cloudward.server.jobs.execute import EXIT_INTERRUPTED, job_environment, run_job
from cloudward.server.jobs.runner import (
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    DatabaseJobs,
    JobInfo,
    job_info,
)
from cloudward.store.models import JobRow

log = logging.getLogger("cloudward.server.jobs")


class LocalRunner(DatabaseJobs):
    def __init__(self, db: ServerDB, config: ServerConfig) -> None:
        super().__init__(db)
        self.config = config
        self._wake = threading.Condition()
        self._pending = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.running = 0
        self._running_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.job_slots <= 0 or self._threads:
            return
        self.recover_orphans()
        for number in range(self.config.job_slots):
            thread = threading.Thread(target=self._work, name=f"job-runner-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def dispatch(self, job_id: str) -> None:
        with self._wake:
            self._pending += 1
            self._wake.notify()

    def recover_orphans(self) -> int:
        """Fail the `running` jobs of this host's cloudward processes that no longer exist."""
        host = socket.gethostname()
        now = self.db.clock()
        failed = 0
        with self.db.write() as session:
            for row in session.scalars(select(JobRow).where(JobRow.status == RUNNING)):
                node_host, _, pid = (row.node or "").rpartition(":")
                if node_host != host or not pid.isdigit() or row.node == self.config.node or _alive(int(pid)):
                    continue
                row.status, row.finished = FAILED, now
                row.error = "the server running this job stopped before it finished"
                failed += 1
        return failed

    # --- workers --------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                job_id = self._next()
                if job_id is not None:
                    self._execute(job_id)
                    continue
            except CloudwardError as exc:  # the store is unreachable: say so, wait, try again
                log.warning("job runner: %s", exc)
            with self._wake:
                if self._pending == 0 and not self._stopping.is_set():
                    self._wake.wait(timeout=self.config.job_poll_interval)
                self._pending = max(0, self._pending - 1)

    def run_claimed(self, job_id: str) -> None:
        """Execute a job some other process already claimed for this runner (a Celery worker's
        `run_job` task, after its compare-and-set): run, notify, close."""
        self._execute(job_id)

    def _next(self) -> str | None:
        for job_id in self.queued():
            if self.claim(job_id, self.config.node):
                return job_id
        return None

    def _execute(self, job_id: str) -> None:
        """Run, then notify, then close: a job turns final only after its notifications were sent,
        so whoever sees `succeeded` also knows the webhooks for that scan have been called."""
        with self._running_lock:
            self.running += 1
        try:
            try:
                result = self._run(job_id)
            except Exception as exc:  # never leave a claimed job `running` for ever
                log.exception("job %s failed inside the runner", job_id)
                result = (FAILED, None, None, "", f"runner error: {type(exc).__name__}")
            status, exit_code, scan_id, log_tail, error = result
            final = replace(self.status(job_id), status=status, exit_code=exit_code, scan_id=scan_id,
                            log_tail=log_tail, error=error, finished=self.db.clock())
            self.finished(final)
            self._close(job_id, *result)
        finally:
            with self._running_lock:
                self.running -= 1

    def _run(self, job_id: str) -> tuple[str, int | None, str | None, str, str]:
        from sqlalchemy.engine import make_url

        password = make_url(self.config.store_url).password
        env = job_environment(self.config.store_url, self.config.data_dir, self.config.job_env)
        with self.db.read() as session:
            argv = session.scalar(select(JobRow.argv).where(JobRow.id == job_id)) or []
        outcome = run_job(argv, env=env, should_cancel=lambda: self.cancel_requested(job_id),
                          timeout=self.config.job_timeout, secrets=[str(password)] if password else [],
                          cancel_every=self.config.job_poll_interval)
        if outcome.cancelled:
            status = CANCELLED
        elif outcome.exit_code in (0, 1) and not outcome.timed_out:
            status = SUCCEEDED
        else:
            status = FAILED
        error = outcome.error
        if outcome.timed_out:
            error = f"stopped after the job timeout ({self.config.job_timeout:.0f}s)"
        elif status == FAILED and not error:
            error = ("interrupted" if outcome.exit_code == EXIT_INTERRUPTED
                     else f"the command exited with status {outcome.exit_code}")
        return status, outcome.exit_code, outcome.scan_id, outcome.log_tail, error

    def _close(self, job_id: str, status: str, exit_code: int | None, scan_id: str | None, log_tail: str,
               error: str) -> JobInfo:
        with self.db.write() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            job.status, job.finished, job.exit_code = status, self.db.clock(), exit_code
            job.scan_id, job.log_tail, job.error = scan_id, log_tail, error
            return job_info(job)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
