"""`cloudward server` (the API, its job runner and scheduler) and `cloudward scheduler` (the
scheduler and runner alone, for a deployment whose API servers run with `--jobs 0 --no-scheduler`).

Thin: build a ServerConfig from the settings, check there is someone to log in, hand the app to
uvicorn. There are no default credentials: a store without users refuses to start unless
`--init-admin NAME` makes the first admin (whose token is printed once).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import typer

from cloudward.cli.common import ConfigOption, err_console, settings

HostOption = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default).")
PortOption = typer.Option(8000, "--port", min=1, max=65535, help="TCP port.")
TlsCertOption = typer.Option(None, "--tls-cert", help="Serve HTTPS with this certificate (PEM).")
TlsKeyOption = typer.Option(None, "--tls-key", help="...and this private key (PEM).")
JobsOption = typer.Option(2, "--jobs", min=0, max=64,
                          help="Scan jobs run at once by this process; 0 = only queue them (another runs them).")
RunnerOption = typer.Option(None, "--runner", metavar="local|celery",
                            help="Who runs jobs: this process (local, default) or `cloudward worker`s through the "
                                 "broker (celery; exposure scans are split over the workers). "
                                 "Env: CLOUDWARD_SERVER_RUNNER.")
BrokerOption = typer.Option(None, "--broker", metavar="URL",
                            help="With --runner celery: redis://HOST:6379/0 or amqp://... Env: CLOUDWARD_BROKER_URL.")


def _print_first_token(name: str, value: str) -> None:
    err_console().print(f"created admin [bold]{name}[/bold]; its API token (shown once, stored only as a hash):",
                        highlight=False)
    sys.stdout.write(value + "\n")
    sys.stdout.flush()


def _ensure_users(db: object, init_admin: str | None) -> None:
    from cloudward.core.errors import UsageError
    from cloudward.server import accounts
    from cloudward.server.audit import Actor
    from cloudward.server.db import ServerDB

    assert isinstance(db, ServerDB)
    if accounts.count_users(db) > 0:
        if init_admin:
            err_console().print("users exist already: --init-admin ignored", highlight=False)
        return
    if not init_admin:
        raise UsageError("no users yet, and cloudward has no default credentials: start with "
                         "`cloudward server --init-admin NAME` (prints the admin's token once), or run "
                         "`cloudward user add NAME --role admin && cloudward token create NAME` first")
    actor = Actor(f"cli:{_os_user()}")
    accounts.create_user(db, actor, init_admin, "admin")
    _info, value = accounts.create_token(db, actor, init_admin, "initial admin token")
    _print_first_token(init_admin, value)


def _os_user() -> str:
    import getpass
    import os

    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def server(
    host: str = HostOption,
    port: int = PortOption,
    jobs: int = JobsOption,
    no_scheduler: bool = typer.Option(False, "--no-scheduler", help="Do not run schedules in this process."),
    init_admin: str | None = typer.Option(None, "--init-admin", metavar="NAME",
                                          help="On a store without users, create this admin and print its token."),
    ssl_certfile: Path | None = TlsCertOption,
    ssl_keyfile: Path | None = TlsKeyOption,
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    runner: str | None = RunnerOption,
    broker: str | None = BrokerOption,
    config: Path | None = ConfigOption,
) -> None:
    """Serve the API and the web dashboard on http://HOST:PORT; SQLite store by default."""
    import uvicorn

    from cloudward.core.errors import UsageError
    from cloudward.server.app import create_app
    from cloudward.server.config import ServerConfig
    from cloudward.server.db import ServerDB
    from cloudward.server.jobs.celery_runner import CeleryRunner, build_runner

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if ssl_certfile is not None and ssl_keyfile is not None:
        _check_tls(ssl_certfile, ssl_keyfile)  # before the store is opened: a typo fails fast and says which file
    server_config = ServerConfig.from_settings(settings(config), host=host, port=port, job_slots=jobs,
                                               scheduler=not no_scheduler, cookie_secure=ssl_certfile is not None)
    _choose_runner(server_config, runner, broker)
    db = ServerDB.open(server_config.store_url)
    try:
        # checked first: a bad broker URL or a SQLite store fails the start, not the first job
        job_runner = build_runner(db, server_config) if server_config.runner != "local" else None
        _ensure_users(db, init_admin)
    except BaseException:
        db.close()
        raise
    if job_runner is None:
        db.close()
    if not _loopback(host) and ssl_certfile is None:
        err_console().print(f"[yellow]warning[/]: serving plain HTTP on {host}: tokens and session cookies cross the "
                            "network in clear (use --tls-cert/--tls-key or a TLS proxy)", highlight=False)
    if job_runner is None:
        app = create_app(server_config)
        runs = f"{jobs} job slot(s)"
    else:
        app = create_app(server_config, db=db, runner=job_runner)
        broker_shown = job_runner.settings.broker_display if isinstance(job_runner, CeleryRunner) else "?"
        runs = f"jobs on cloudward workers via {broker_shown}"
    err_console().print(f"cloudward API on http{'s' if ssl_certfile else ''}://{host}:{port} "
                        f"(store {app.state.cloudward.db.store.url}, {runs}, "
                        f"scheduler {'off' if no_scheduler else 'on'})", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=log_level, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                proxy_headers=False, server_header=False)


def scheduler(
    jobs: int = JobsOption,
    interval: float = typer.Option(15.0, "--interval", min=1.0, max=60.0,
                                   help="Seconds between looks at the schedules."),
    runner: str | None = RunnerOption,
    broker: str | None = BrokerOption,
    config: Path | None = ConfigOption,
) -> None:
    """Run the schedules (and, with --jobs > 0, the queued jobs) without serving the API."""
    import signal
    import threading

    from cloudward.server.config import ServerConfig
    from cloudward.server.db import ServerDB
    from cloudward.server.jobs.celery_runner import build_runner
    from cloudward.server.schedules import Scheduler
    from cloudward.server.webhooks import Notifier

    server_config = ServerConfig.from_settings(settings(config), job_slots=jobs, scheduler_interval=interval)
    _choose_runner(server_config, runner, broker)
    db = ServerDB.open(server_config.store_url)
    job_runner = build_runner(db, server_config)
    job_runner.listeners.append(Notifier(db))
    loop = Scheduler(db, job_runner, interval=interval)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    job_runner.start()
    loop.start()
    runs = "jobs on cloudward workers" if server_config.runner == "celery" else f"{jobs} job slot(s)"
    err_console().print(f"cloudward scheduler on {db.store.url} ({runs}); Ctrl-C stops", highlight=False)
    try:
        stop.wait()
    finally:
        loop.stop()
        job_runner.stop()
        db.close()


def _choose_runner(config: object, runner: str | None, broker: str | None) -> None:
    """Command-line choices override CLOUDWARD_SERVER_RUNNER / CLOUDWARD_BROKER_URL."""
    from cloudward.server.config import ServerConfig

    assert isinstance(config, ServerConfig)
    if runner is not None:
        config.runner = runner.strip().lower()
    if broker is not None:
        config.broker_url = broker.strip()


def _check_tls(cert: Path, key: Path) -> None:
    """Load the pair the way uvicorn will, so a missing, unreadable or mismatched file is one clear
    error naming it instead of a traceback from inside the server's start."""
    import ssl

    from cloudward.core.errors import UsageError

    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")  # an encrypted key fails here, not at a prompt
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(_tls_problem(cert, key, exc)) from None


def _head(path: Path, size: int = 1 << 20) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _tls_problem(cert: Path, key: Path, exc: BaseException) -> str:
    """Which of the two files is wrong, in words (OpenSSL's own reason is often 'PEM lib')."""
    head, key_head = _head(cert), _head(key)
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return f"--tls-cert {cert}: not a PEM certificate (-----BEGIN CERTIFICATE-----)"
    if b"PRIVATE KEY-----" not in key_head:
        return f"--tls-key {key}: not a PEM private key"
    if b"ENCRYPTED" in key_head:
        return f"--tls-key {key}: the private key is encrypted; the server needs it unencrypted (mode 0600)"
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return f"--tls-key {key} does not go with --tls-cert {cert} ({reason})"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
