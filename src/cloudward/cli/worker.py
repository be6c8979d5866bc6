"""`cloudward worker`: a Celery worker running scan jobs and chunks of distributed exposure scans.

Thin: check the settings (a broker, a PostgreSQL store, migrated), then hand over to Celery's own
worker. Every worker of a deployment uses the same broker and store as the servers that send it
work (`cloudward server --runner celery`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cloudward.cli.common import ConfigOption, err_console, settings

if TYPE_CHECKING:
    from cloudward.core.config import Settings
    from cloudward.core.scan import ScanResult
    from cloudward.server.jobs.runner import JobInfo


def worker(
    broker: str | None = typer.Option(None, "--broker", envvar="CLOUDWARD_BROKER_URL", show_envvar=True,
                                      help="Broker URL: redis://HOST:6379/0 or amqp://USER:PASS@HOST:5672//."),
    concurrency: int = typer.Option(os.cpu_count() or 1, "--concurrency", min=1, max=256,
                                    help="Tasks this worker runs at once (pool processes); default: the CPUs."),
    name: str | None = typer.Option(None, "--name", help="Node name (default cloudward-PID@HOST); unique per worker."),
    chunk_hosts: int | None = typer.Option(None, "--chunk-hosts", min=1, max=65536,
                                           help="Hosts per chunk when this worker plans a distributed exposure "
                                                "scan (default 64, or CLOUDWARD_WORKER_CHUNK_HOSTS)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    config: Path | None = ConfigOption,
) -> None:
    """Run scan jobs sent by `cloudward server --runner celery`; exposure scans are split into
    chunks spread over every worker and merged in the PostgreSQL store."""
    from cloudward.core.errors import UsageError
    from cloudward.server.distributed import settings as distributed
    from cloudward.server.distributed.app import QUEUE, create_celery
    from cloudward.store import Store
    from cloudward.store.engine import mask_url, store_url

    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level: {log_level[:20]!r} is not one of debug, info, warning, error")
    conf = settings(config)

    worker_settings = distributed.load(store_url(conf), conf.resolved_data_dir(), broker=broker,
                                       chunk_hosts=chunk_hosts, exposure=conf.exposure.model_dump())
    Store.open(worker_settings.store_url).close()  # reachable and migrated before any task arrives
    node = name or f"cloudward-{os.getpid()}@{socket.gethostname()}"
    if "@" not in node:
        node = f"{node}@{socket.gethostname()}"
    err_console().print(f"cloudward worker {node}: broker {worker_settings.broker_display}, store "
                        f"{mask_url(worker_settings.store_url)}, {concurrency} task(s) at once", highlight=False)
    app = create_celery(worker_settings)
    app.worker_main(["worker", f"--concurrency={concurrency}", f"--hostname={node}", f"--queues={QUEUE}",
                     f"--loglevel={log_level.upper()}", "--without-gossip", "--without-mingle", "--without-heartbeat"])


def distributed_scan(conf: Settings, targets: list[str], input_list: Path | None, *, ports: str,
                     concurrency: int | None, rate: float | None, timeout: float | None, max_hosts: int | None,
                     allow_large_range: bool, max_open_per_host: int, fail_on: str | None, rules: list[Path],
                     no_store: bool, broker: str | None) -> ScanResult:
    """`cloudward exposure scan --distributed`: the scan as a job for the workers (the command line
    already checked the targets and options); returns the scan the workers assembled."""
    from cloudward.core.errors import UsageError
    from cloudward.exposure.targets import read_target_file
    from cloudward.server.distributed.client import run_distributed, scan_words
    from cloudward.store.engine import store_url

    if rules:
        raise UsageError("--rules cannot be used with --distributed: the workers judge with the built-in rules")
    if no_store:
        raise UsageError("--no-store cannot be used with --distributed: the scan is assembled in the store")
    listed = [*targets, *(read_target_file(input_list) if input_list is not None else [])]
    words = scan_words(listed, ports=ports, concurrency=concurrency, rate=rate, timeout=timeout, max_hosts=max_hosts,
                       allow_large_range=allow_large_range, max_open_per_host=max_open_per_host, fail_on=fail_on)
    shown: list[int] = []

    def update(job: JobInfo, block: dict[str, Any] | None) -> None:
        if block and len(block.get("done", [])) not in shown:
            shown.append(len(block.get("done", [])))
            err_console().print(f"distributed scan {job.scan_id}: {len(block.get('done', []))}/{block.get('chunks')} "
                                "chunks merged", highlight=False)

    return run_distributed(words, store_url=store_url(conf), data_dir=conf.resolved_data_dir(), broker=broker,
                           actor=f"cli:{_os_user()}", on_update=update)


def _os_user() -> str:
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
