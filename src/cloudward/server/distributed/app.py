"""The Celery app: two tasks on one queue, configured so that a lost worker loses nothing.

- `task_acks_late`: a message is acknowledged after its task returns, not when it is taken, so a
  worker that dies mid-task leaves it unacknowledged and the broker hands it to another worker.
- `task_reject_on_worker_lost`: the same when only the pool process running the task dies.
- prefetch 1: a worker holds one message per pool process, never a backlog that would wait for it
  (or die with it) while other workers are idle.
- JSON only: a message is data checked by `Chunk.from_payload`, never a pickle.
- no result backend: the results are in the store.
- `worker_cancel_long_running_tasks_on_connection_loss`: a worker cut off from the broker stops
  its tasks, whose messages the broker hands to others, rather than finish them twice.

Both tasks are idempotent (see `execute.py`): running a message twice costs time, never data.
A task the store refuses (it is down, a lock times out) is retried with back-off; a chunk whose
retries are spent is merged as failed, so its scan still ends (as `failed`, which closes nothing).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from cloudward.core.errors import InputError, StoreError
from cloudward.server.distributed.settings import DistributedSettings

if TYPE_CHECKING:
    from celery import Celery

    from cloudward.server.distributed.chunks import Chunk
    from cloudward.server.distributed.execute import WorkerContext

log = logging.getLogger("cloudward.distributed")
QUEUE = "cloudward"
RUN_JOB = "cloudward.run_job"
SCAN_CHUNK = "cloudward.scan_chunk"
MAX_RETRIES = 5
CONF_KEY = "cloudward_settings"
_CONTEXTS: dict[tuple[int, int], WorkerContext] = {}


def create_celery(settings: DistributedSettings) -> Celery:
    """A Celery app for `settings`, with cloudward's tasks registered (producers and workers alike)."""
    from celery import Celery

    app = Celery("cloudward", set_as_current=False, fixups=[])
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
        },
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=True,
        enable_utc=True,
    )
    app.conf[CONF_KEY] = settings.as_conf()
    _register(app)
    _warm_up_pool_processes(app)
    return app


def _warm_up_pool_processes(app: Celery) -> None:
    """Open the store and compile the rules as each pool process starts, not in its first task:
    the first chunk of a scan should cost what every other chunk costs. (The signal only fires in
    a worker's pool processes, never in a process that only sends tasks.)"""
    from celery.signals import worker_process_init

    def warm_up(**_: Any) -> None:
        try:
            context(app).rules()
        except Exception as exc:  # the first task will meet the same problem and report it properly
            log.warning("pool process warm-up: %s", exc)

    worker_process_init.connect(warm_up, weak=False)


def send_chunk(app: Celery, chunk: Chunk) -> None:
    app.send_task(SCAN_CHUNK, args=[chunk.payload()], task_id=chunk.task_id, queue=QUEUE)


def send_job(app: Celery, job_id: str) -> None:
    app.send_task(RUN_JOB, args=[job_id], task_id=f"job-{job_id}", queue=QUEUE)


def context(app: Celery) -> WorkerContext:
    """This process's WorkerContext: made on first use after the pool forked, never shared across
    processes (a connection pool must not cross a fork)."""
    from cloudward.server.db import ServerDB
    from cloudward.server.distributed.execute import WorkerContext

    key = (os.getpid(), id(app))
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        settings = DistributedSettings.from_conf(app.conf[CONF_KEY])
        logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's migration check is not news
        ctx = WorkerContext(settings, ServerDB.open(settings.store_url), lambda chunk: send_chunk(app, chunk))
        _CONTEXTS[key] = ctx
    return ctx


def _backoff(retries: int) -> float:
    return float(min(60, 2 ** (retries + 1)))


def _job_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isalnum():
        raise InputError("run_job: the job id must be 1-64 letters or digits")
    return value


def _register(app: Celery) -> None:
    @app.task(name=RUN_JOB, bind=True, max_retries=MAX_RETRIES)  # type: ignore[untyped-decorator]
    def run_job_task(self: Any, job_id: Any) -> None:
        from cloudward.server.distributed.execute import run_job

        try:
            run_job(context(self.app), _job_id(job_id), task_id=str(self.request.id or job_id))
        except InputError as exc:
            log.error("refused a job message: %s", exc)
        except StoreError as exc:
            if self.request.retries < MAX_RETRIES:
                raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from None
            log.error("job %s: giving up, the store keeps failing: %s", job_id, exc)

    @app.task(name=SCAN_CHUNK, bind=True, max_retries=MAX_RETRIES)  # type: ignore[untyped-decorator]
    def scan_chunk_task(self: Any, payload: Any) -> None:
        from cloudward.server.distributed.execute import fail_chunk, run_chunk

        node = str(self.request.hostname or "worker")
        try:
            run_chunk(context(self.app), payload, node=node)
        except InputError as exc:
            log.error("refused a chunk message: %s", exc)
        except StoreError as exc:
            if self.request.retries < MAX_RETRIES:
                raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from None
            log.error("chunk %s: giving up after %d tries: %s", self.request.id, MAX_RETRIES + 1, exc)
            try:
                fail_chunk(context(self.app), payload, f"chunk not scanned: the findings store kept failing: {exc}",
                           node=node)
            except StoreError as again:
                log.error("chunk %s: cannot even record the failure: %s", self.request.id, again)
