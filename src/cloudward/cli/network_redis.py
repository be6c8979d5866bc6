"""`cloudward network protect redis`: run the RESP proxy that virtually patches a Redis server.

Thin: load the policy (no policy, no start), hand the proxy a findings sink that records into the
store and a log sink for stderr, serve until SIGINT/SIGTERM (SIGHUP reloads the policy). Exit codes:
0 after a requested stop, 2 when the policy, an address or the listening port is unusable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloudward.cli.common import ConfigOption, NoStoreOption, err_console, settings
from cloudward.cli.network import protect_app

if TYPE_CHECKING:
    from cloudward.core.finding import Finding


ListenOption = typer.Option("127.0.0.1:6380", "--listen", metavar="HOST:PORT",
                            help="Where clients connect (binding 0.0.0.0 or :: exposes the proxy to the network).")
UpstreamOption = typer.Option("127.0.0.1:6379", "--upstream", metavar="HOST:PORT|unix:PATH",
                              help="The Redis server to protect.")
PolicyOption = typer.Option(None, "--policy", metavar="FILE",
                            help="Policy (YAML): rule actions, deny/allow/rename lists, require_auth, limits. "
                                 "Default: the built-in rules' defaults.")
CheckOption = typer.Option(False, "--check", help="Validate the policy, print what it does, and exit.")
HashPasswordOption = typer.Option(False, "--hash-password",
                                  help="Read a password (stdin or prompt), print the password_sha256 value for "
                                       "require_auth, and exit.")
LogAllowedOption = typer.Option(False, "--log-allowed", help="Also log every allowed command (slower).")
WatchOption = typer.Option(True, "--watch-policy/--no-watch-policy",
                           help="Reload the policy when its file changes (SIGHUP always reloads).")


@protect_app.command("redis")
def protect_redis(
    listen: str = ListenOption,
    upstream: str = UpstreamOption,
    policy_file: Path | None = PolicyOption,
    check: bool = CheckOption,
    hash_password: bool = HashPasswordOption,
    log_allowed: bool = LogAllowedOption,
    watch_policy: bool = WatchOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Proxy Redis clients to --upstream, refusing what the policy blocks (CONFIG SET dir/dbfilename,
    SLAVEOF/REPLICAOF, MODULE LOAD, DEBUG, Lua sandbox escapes...) with a RESP error in place and a
    finding; everything else passes unchanged, pipelining included. Runs until SIGINT/SIGTERM;
    SIGHUP reloads the policy without dropping connections."""
    from cloudward.core.errors import UsageError
    from cloudward.network.redis_policy import PolicyError, load_policy
    from cloudward.network.redis_policy import hash_password as sha256_of

    if hash_password:
        typer.echo(sha256_of(_read_password()))
        return
    try:
        policy = load_policy(policy_file)
    except PolicyError as exc:
        raise UsageError(f"--policy: {exc}") from None
    console = err_console()
    if check:
        console.print(f"policy {policy_file or '(built-in)'} is valid: {policy.describe()}", highlight=False,
                      soft_wrap=True)
        return

    from cloudward.network.redis_proxy import RedisProxy, Upstream, run_proxy

    try:
        target = Upstream.parse(upstream)
    except ValueError as exc:
        raise UsageError(f"--upstream: {exc}") from None
    try:
        host, port = _listen_address(listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None

    log_lock = threading.Lock()

    def log(line: str) -> None:
        with log_lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    recorder = None if no_store else _StoreRecorder(config, f"redis://{target}", log)
    proxy = RedisProxy(policy, target, host=host, port=port, policy_path=policy_file,
                       sink=recorder.add if recorder is not None else None, log=log, log_allowed=log_allowed)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - recognising the user's choice, not binding
        log(f"warning: --listen {listen} accepts clients from every network interface")

    def ready(running: RedisProxy) -> None:
        log(f"redis proxy: listening on {running.address}, protecting {target} "
            f"(policy {policy_file or 'built-in'}: {running.policy.describe()})")
        if not _reachable(target):
            log(f"warning: {target} does not accept connections now; clients get an error until it does")

    try:
        stats = run_proxy(proxy, ready=ready, watch_interval=2.0 if watch_policy else None)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        stats = proxy.stats
    finally:
        if recorder is not None:
            recorder.close(proxy.stats.as_dict())
    log(f"redis proxy stopped: {stats.connections:,} connections, {stats.forwarded:,} commands forwarded, "
        f"{stats.blocked:,} blocked, {stats.alerted:,} alerts, {stats.auth_failures:,} failed AUTH, "
        f"{stats.protocol_errors:,} protocol errors, {stats.refused_connections:,} connections refused, "
        f"{stats.promoted:,} clients moved off a shared server connection"
        + (f", {stats.events_dropped:,} events dropped" if stats.events_dropped else "")
        + (f", {stats.shared_errors:,} shared-connection errors" if stats.shared_errors else ""))


def _read_password() -> str:
    from cloudward.core.errors import UsageError

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("--hash-password: empty password")
    return password


def _listen_address(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port_text)


def _reachable(target: object) -> bool:
    import socket

    path = getattr(target, "path", None)
    try:
        if path:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1.0)
                sock.connect(path)
        else:
            with socket.create_connection((getattr(target, "host", ""), getattr(target, "port", 0)), timeout=1.0):
                pass
    except OSError:
        return False
    return True


class _StoreRecorder:
    """Findings from the proxy's reporter thread into the store, as one scan of kind `redis-proxy`.

    The scan is recorded again (same id: the store replaces what it saw) at most once a second and
    at the end, holding the newest finding per fingerprint, and finished as `completed`. A proxy only
    sees the attacks made while it runs, so its end must not mark earlier findings fixed: the store's
    scope for this kind covers nothing (store/scope.py)."""

    def __init__(self, config: Path | None, target: str, log: object) -> None:
        from cloudward.core.scan import ScanResult

        self.log = log
        self.result = ScanResult(kind="redis-proxy", targets=[target])
        self.result.stats["partial"] = True
        self.findings: dict[str, Finding] = {}
        self.lock = threading.Lock()
        self.last = 0.0
        self.dirty = False
        self.store = None
        try:
            from cloudward.store import open_store

            self.store = open_store(settings(config))
        except Exception as exc:  # recording is secondary: protection goes on without it
            self._say(f"warning: findings store unavailable ({exc}); findings are only logged")

    def _say(self, line: str) -> None:
        if callable(self.log):
            self.log(line)

    def add(self, findings: Sequence[Finding]) -> None:
        with self.lock:
            for finding in findings:
                self.findings[finding.fingerprint] = finding
            self.dirty = True
            if time.monotonic() - self.last >= 1.0:
                self._record()

    def _record(self) -> None:
        if self.store is None or not self.dirty:
            return
        self.result.findings = list(self.findings.values())
        self.store.record_scan(self.result)
        self.last = time.monotonic()
        self.dirty = False

    def close(self, stats: dict[str, int]) -> None:
        from cloudward.core.scan import ScanStatus

        with self.lock:
            if self.store is None:
                return
            try:
                self.result.stats.update(stats)
                self.result.finish(ScanStatus.COMPLETED)
                self.dirty = True
                self._record()
            except Exception as exc:
                self._say(f"warning: could not record the proxy's findings: {exc}")
            finally:
                self.store.close()
