"""How one server runs: address, store, key, job slots or Celery runner, scheduler, cookies.

Built from the CLI's settings (the same store every `cloudward` command uses) plus the options of
`cloudward server` and a few `CLOUDWARD_SERVER_*` variables. The session-signing key is
`CLOUDWARD_SERVER_SECRET_KEY` when set (several servers behind one name must share it), else a
random key kept in `<data dir>/server-session.key` (0600), created on first start.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloudward.core.errors import ConfigError

if TYPE_CHECKING:
    from cloudward.core.config import Settings

KEY_FILE = "server-session.key"
MIN_KEY_CHARS = 32


@dataclass
class ServerConfig:
    store_url: str
    data_dir: Path
    secret_key: bytes
    host: str = "127.0.0.1"
    port: int = 8000
    # Jobs this server runs at once; 0 = it only queues (a separate runner or worker executes).
    job_slots: int = 2
    scheduler: bool = True
    scheduler_interval: float = 15.0
    job_poll_interval: float = 1.0
    job_timeout: float = 6 * 3600.0
    session_hours: float = 12.0
    cookie_secure: bool = False
    node: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # Extra environment for job processes (tests point PATH or a config here).
    job_env: dict[str, str] = field(default_factory=dict)
    # Who executes jobs: "local" (job_slots threads here) or "celery" (`cloudward worker`s via broker_url).
    runner: str = "local"
    broker_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None,
                      **overrides: object) -> ServerConfig:
        from cloudward.store.engine import store_url

        env = os.environ if env is None else env
        data_dir = settings.resolved_data_dir()
        key = load_secret_key(data_dir, env)
        config = cls(store_url=store_url(settings), data_dir=data_dir, secret_key=key)
        if env.get("CLOUDWARD_SERVER_COOKIE_SECURE", "").lower() in ("1", "true", "yes"):
            config.cookie_secure = True
        config.runner = env.get("CLOUDWARD_SERVER_RUNNER", "").strip().lower() or config.runner
        config.broker_url = env.get("CLOUDWARD_BROKER_URL", "").strip()
        for name, value in overrides.items():
            if not hasattr(config, name):
                raise TypeError(f"unknown server option {name}")
            setattr(config, name, value)
        return config


def load_secret_key(data_dir: Path, env: Mapping[str, str]) -> bytes:
    configured = env.get("CLOUDWARD_SERVER_SECRET_KEY", "")
    if configured:
        if len(configured) < MIN_KEY_CHARS:
            raise ConfigError(f"CLOUDWARD_SERVER_SECRET_KEY must have at least {MIN_KEY_CHARS} characters")
        return configured.encode()
    path = data_dir / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the session key {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"the session key {path} is too short: delete it to have a new one made")
    return key.encode()
