"""Jobs executed by `cloudward worker` processes instead of this server (`--runner celery`).

The job row is the same as with `LocalRunner` (submit, cancel and status work unchanged); only
execution moves: `dispatch` puts the job id on the broker, a worker claims the row and runs it,
and an `exposure scan` is split into chunks spread over all workers (server/distributed/). The
worker closes the job and sends its webhooks. A job whose message could not be sent (broker
down) stays `queued` and is sent again every few seconds until the broker takes it, and on start
every queued job is sent again (a duplicate message is harmless: the claim is a compare-and-set).
"""

from __future__ import annotations

import logging
import threading

from cloudward.core.errors import CloudwardError, ConfigError
from cloudward.server.config import ServerConfig
from cloudward.server.db import ServerDB
from cloudward.server.jobs.runner import DatabaseJobs

log = logging.getLogger("cloudward.server.jobs")
RESEND_SECONDS = 5.0


class CeleryRunner(DatabaseJobs):
    def __init__(self, db: ServerDB, config: ServerConfig) -> None:
        from cloudward.server.distributed.app import create_celery
        from cloudward.server.distributed.settings import load

        super().__init__(db)
        self.settings = load(config.store_url, config.data_dir, broker=config.broker_url or None,
                             job_timeout=config.job_timeout)
        self.celery = create_celery(self.settings)
        self._unsent: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def dispatch(self, job_id: str) -> None:
        from cloudward.server.distributed.app import send_job

        try:
            send_job(self.celery, job_id)
        except Exception as exc:  # kombu raises a zoo of connection errors; the job stays queued
            log.warning("job %s stays queued: cannot reach the broker %s: %s", job_id, self.settings.broker_display,
                        type(exc).__name__)
            with self._lock:
                self._unsent.add(job_id)
            return
        with self._lock:
            self._unsent.discard(job_id)

    def start(self) -> None:
        if self._thread is not None:
            return
        for job_id in self.queued(limit=10_000):
            self.dispatch(job_id)
        self._thread = threading.Thread(target=self._resend, name="celery-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.celery.close()

    def _resend(self) -> None:
        while not self._stopping.wait(RESEND_SECONDS):
            with self._lock:
                unsent = sorted(self._unsent)
            try:
                still_queued = set(self.queued(limit=10_000)) if unsent else set()
            except CloudwardError as exc:  # the store is down too: try again next round
                log.warning("job dispatch: %s", exc)
                continue
            for job_id in unsent:
                if job_id in still_queued:
                    self.dispatch(job_id)
                else:
                    with self._lock:
                        self._unsent.discard(job_id)


def build_runner(db: ServerDB, config: ServerConfig) -> DatabaseJobs:
    """The runner `config.runner` names: `local` (this process's threads) or `celery` (workers)."""
    if config.runner == "celery":
        return CeleryRunner(db, config)
    if config.runner == "local":
        from cloudward.server.jobs.local import LocalRunner

        return LocalRunner(db, config)
    raise ConfigError(f"unknown job runner {config.runner[:40]!r} (choose local or celery)")
