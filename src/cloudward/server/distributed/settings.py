"""Where the server and the workers meet: one broker, one PostgreSQL store, and how scans are cut.

Everything a worker needs travels in the Celery app's configuration, set once in the worker's
main process and inherited by its pool processes (only the test hook of `tasks.py` is read from
the environment by a task).

Environment (every one also settable by a command-line option where one exists):
- `CLOUDWARD_BROKER_URL`: `redis://`, `rediss://`, `amqp://`, `amqps://` or `pyamqp://`.
- `CLOUDWARD_WORKER_CHUNK_HOSTS`: hosts per chunk of a distributed exposure scan (default 64; a
  scan is never cut into more than 256 chunks, so large scans get larger chunks).
- `CLOUDWARD_WORKER_VISIBILITY_TIMEOUT`: seconds (Redis broker) before a message taken by a worker
  that never acknowledged it — because it died — is handed to another worker (default 3600). A
  chunk or job still running after this long is handed out a second time; that is harmless
  (chunks merge idempotently, a job is claimed once) but wasted work, so keep it above the
  longest task. RabbitMQ redelivers as soon as the dead worker's connection closes.
- `CLOUDWARD_WORKER_RESTORE_INTERVAL`: seconds between a worker's looks for such messages (10).

The store must be PostgreSQL: every worker and the server write the same scans, and SQLite is a
file on one machine.

The broker is a trust boundary: whoever can publish to it can ask for work. Messages are JSON
(never pickle) and checked field by field, a job message only names a job row already in the store,
and a chunk is refused unless its hosts and ports are those of a running scan in the store; still,
give the broker a password and keep it off untrusted networks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cloudward.core.errors import ConfigError
from cloudward.store.engine import mask_url

BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")
DEFAULT_CHUNK_HOSTS = 64
MAX_CHUNK_HOSTS = 65536
MAX_CHUNKS = 256
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
DEFAULT_RESTORE_INTERVAL = 10.0
MAX_URL_CHARS = 2000


@dataclass(frozen=True)
class DistributedSettings:
    broker_url: str
    store_url: str
    data_dir: str
    chunk_hosts: int = DEFAULT_CHUNK_HOSTS
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    restore_interval: float = DEFAULT_RESTORE_INTERVAL
    job_timeout: float = 6 * 3600.0
    # the worker's `[exposure]` settings: the defaults a job's own options override
    exposure: dict[str, Any] = field(default_factory=dict)

    def as_conf(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_conf(cls, data: Mapping[str, Any]) -> DistributedSettings:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def broker_display(self) -> str:
        return mask_url(self.broker_url)


def check_broker_url(url: str | None) -> str:
    """A broker URL Celery can use, or ConfigError naming it (password masked)."""
    text = (url or "").strip()
    if not text:
        raise ConfigError("no broker: pass --broker URL or set CLOUDWARD_BROKER_URL "
                          "(e.g. redis://127.0.0.1:6379/0 or amqp://user:pass@host:5672//)")
    shown = _masked(text)
    if len(text) > MAX_URL_CHARS or any(ord(c) < 33 or c == "\x7f" for c in text):
        raise ConfigError(f"broker URL {shown[:80]!r} is not a valid URL")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"broker URL {shown[:80]!r} is not a valid URL") from None
    if parts.scheme.lower() not in BROKER_SCHEMES:
        raise ConfigError(f"broker URL {shown[:80]!r}: scheme must be one of {', '.join(BROKER_SCHEMES)}")
    if not parts.hostname:
        raise ConfigError(f"broker URL {shown[:80]!r} names no host")
    return text


def check_store_url(url: str) -> str:
    """Distributed runs need a store every worker reaches: PostgreSQL, never SQLite."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise ConfigError(f"findings store URL {mask_url(url)} is not a valid URL") from None
    if backend != "postgresql":
        raise ConfigError(
            f"distributed scans need a PostgreSQL store shared by the server and every worker, and the store is "
            f"{mask_url(url)}: set CLOUDWARD_DB_URL (or [store] url) to postgresql+psycopg://USER@HOST/DB")
    return url


def _masked(url: str) -> str:
    try:
        return mask_url(url)
    except Exception:  # a hostile URL must not make the error message itself fail
        return "<unparsable URL>"


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw[:40]!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw[:40]!r} must be between {low:g} and {high:g}")
    return value


def load(store_url: str, data_dir: Path | str, *, broker: str | None = None, chunk_hosts: int | None = None,
         env: Mapping[str, str] | None = None, job_timeout: float = 6 * 3600.0,
         exposure: Mapping[str, Any] | None = None) -> DistributedSettings:
    """Settings for a worker or a Celery-backed server: options first, then the environment."""
    env = os.environ if env is None else env
    hosts = chunk_hosts if chunk_hosts is not None else int(
        _number(env, "CLOUDWARD_WORKER_CHUNK_HOSTS", DEFAULT_CHUNK_HOSTS, 1, MAX_CHUNK_HOSTS))
    if not 1 <= hosts <= MAX_CHUNK_HOSTS:
        raise ConfigError(f"chunk size {hosts} must be between 1 and {MAX_CHUNK_HOSTS} hosts")
    return DistributedSettings(
        broker_url=check_broker_url(broker if broker else env.get("CLOUDWARD_BROKER_URL")),
        store_url=check_store_url(store_url),
        data_dir=str(data_dir),
        chunk_hosts=hosts,
        visibility_timeout=_number(env, "CLOUDWARD_WORKER_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT, 1,
                                   7 * 86400),
        restore_interval=_number(env, "CLOUDWARD_WORKER_RESTORE_INTERVAL", DEFAULT_RESTORE_INTERVAL, 0.1, 3600),
        job_timeout=job_timeout,
        exposure=dict(exposure or {}),
    )
