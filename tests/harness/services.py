"""Start real network services on free loopback ports in throwaway directories, and stop them.

cloudward's probes are only worth trusting when they have talked to the real thing, so tests and
benchmarks run the actual daemons (redis, etcd, sshd, PostgreSQL, a Docker registry, podman's Docker
API, a Jupyter server) instead of fakes.  Every daemon runs in the foreground as our own child, in a
process group of its own, so ``Service.stop()`` (and the ``atexit`` safety net) can take down the
daemon together with whatever it forked, then remove its directory.

Services bind only to 127.0.0.0/8.  Each ``start_*`` takes ``host`` so a benchmark can spread many
services over distinct loopback addresses (127.0.1.10, 127.0.1.20, ...), which Linux routes to ``lo``
without any configuration.
"""

from __future__ import annotations

import atexit
import importlib.util
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, ParamSpec, Self, TypeVar
from urllib.parse import quote

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")
_POLL = 0.05
_PG_BIN = Path("/usr/lib/postgresql/15/bin")
_SSHD = "/usr/sbin/sshd"

# urllib would send loopback requests through an HTTP(S)_PROXY from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    """A service did not come up; the message carries the tail of its log."""


class MissingBinaryError(ServiceError):
    """A daemon is not installed.  Deliberately an error, not a skip: a green run that skipped the
    real-service tests would prove nothing."""


# --------------------------------------------------------------------------- ports and addresses


def check_loopback(host: str) -> str:
    """Refuse anything outside 127.0.0.0/8, so no test ever exposes a daemon on a real interface."""
    try:
        ok = ipaddress.ip_address(host) in _LOOPBACK_NET
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"services bind only to 127.0.0.0/8 addresses, not {host!r}")
    return host


_issued: set[tuple[str, int]] = set()
_issued_lock = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free on ``host`` now and was not handed out before in this process.

    Remembering handed-out ports matters because a daemon binds its port only some time after we
    picked it; without that, two services started back to back could be given the same port.
    """
    check_loopback(host)
    with _issued_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port: int = sock.getsockname()[1]
            # a port number is handed out once whatever the address, and on another loopback
            # address only if 127.0.0.1 has it free too: tests that check a service binds only its
            # own address must not meet another service on the same number
            if port not in {p for _, p in _issued} and (host == LOOPBACK or _bindable(LOOPBACK, port)):
                _issued.add((host, port))
                return port


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port; ``TimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f}s")
        time.sleep(_POLL)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET, with HTTP errors returned rather than raised (a 401 still proves
    the server is up)."""
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# --------------------------------------------------------------------------- the managed process

ReadyCheck = Callable[["Service"], bool]
Arg = str | os.PathLike[str]

_live: set[Service] = set()
_live_lock = threading.Lock()


class Service:
    """One daemon: its own temp directory, a free port, and (once launched) a process group.

    Also a context manager; ``stop()`` is idempotent and safe to call at any stage, which is what
    lets every ``start_*`` clean up after a half-finished start.
    """

    def __init__(self, name: str, host: str = LOOPBACK, *, dir_mode: int = 0o700,
                 port: int | None = None) -> None:
        self.name = name
        self.host = check_loopback(host)
        # A fixed port is for benchmarks that need well-known ports on many loopback addresses.
        self.port = port or free_port(host)
        self.dir = Path(tempfile.mkdtemp(prefix=f"cloudward-{name}-", dir="/tmp"))
        self.dir.chmod(dir_mode)
        self.log_path = self.dir / "log"
        self.url: str | None = None
        self.user: str | None = None
        self.password: str | None = None
        self.token: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self.stop_signal = signal.SIGTERM
        self._stopped = False
        self._last_log = ""
        self._created = time.monotonic()
        with _live_lock:
            _live.add(self)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"pid={self.pid}"
        return f"<Service {self.name} {self.host}:{self.port} {state}>"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and not self._stopped and not _exited(self.process.pid)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the daemon's stdout/stderr; still available after ``stop()`` removed the file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = self._last_log
        return "\n".join(text.splitlines()[-lines:])

    def launch(
        self,
        argv: Sequence[Arg],
        *,
        ready: ReadyCheck,
        timeout: float = START_TIMEOUT,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> Self:
        """Run ``argv`` as a new process group and poll ``ready`` until it holds.

        Raises ``ServiceError`` with the log tail if the process dies or never gets ready; the
        caller's ``cleanup_on_error`` then stops it.
        """
        if self.process is not None:
            raise ServiceError(f"{self.name} was already launched")
        args = [os.fspath(a) for a in argv]
        require_binary(args[0])
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )
        deadline = began + timeout
        while not ready(self):
            if (info := _exit_info(self.process.pid)) is not None:
                raise ServiceError(self._failure(f"exited (status/signal {info.si_status})"))
            if time.monotonic() > deadline:
                raise ServiceError(self._failure(f"was not ready after {timeout:.0f}s"))
            time.sleep(_POLL)
        self.startup_seconds = time.monotonic() - self._created  # preparation (initdb...) included
        return self

    def _failure(self, what: str) -> str:
        return (
            f"{self.name} on {self.host}:{self.port} {what}; dir {self.dir}\n"
            f"--- log tail ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Signal the whole process group, escalate to SIGKILL, reap, remove the directory.

        The leader is waited for with WNOWAIT so it stays a zombie until the group has been
        SIGKILLed: as long as it is unreaped its pid, and so the group id, cannot be reused by an
        unrelated process that we would then kill.
        """
        if self._stopped:
            return
        self._stopped = True
        proc = self.process
        if proc is not None:
            _signal_group(proc.pid, self.stop_signal)
            deadline = time.monotonic() + timeout
            while not _exited(proc.pid) and time.monotonic() < deadline:
                time.sleep(_POLL)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        with suppress(OSError):
            self._last_log = self.log_path.read_text(errors="replace")[-65536:]
        if not os.environ.get("CLOUDWARD_KEEP_SERVICE_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
        with _live_lock:
            _live.discard(self)

    @contextmanager
    def cleanup_on_error(self) -> Iterator[Self]:
        """Wrap the preparation and launch of a service, so a failure anywhere leaves nothing behind."""
        try:
            yield self
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _exit_info(pid: int) -> os.waitid_result | None:
    """How our child exited, or None while it runs.  Does not reap it (see ``Service.stop``)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)


def _exited(pid: int) -> bool:
    try:
        return _exit_info(pid) is not None
    except ChildProcessError:  # already reaped
        return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@atexit.register
def stop_all() -> None:
    """Safety net for services whose owner never stopped them (a crashed fixture, a benchmark
    interrupted half-way)."""
    with _live_lock:
        leftovers = list(_live)
    for service in leftovers:
        service.stop(timeout=3.0)


def require_binary(name: str) -> str:
    """The full path of an executable, or ``MissingBinaryError`` telling how to install it."""
    path = shutil.which(name)
    if path is None:
        raise MissingBinaryError(
            f"{name} is not installed: run `make test` (scripts/setup installs the apt packages the "
            "real-service tests need)"
        )
    return path


def _run(service: Service, argv: Sequence[Arg], *, user: str | None = None) -> None:
    """A preparation step (key generation, initdb); on failure its output goes into the error,
    since the step never reaches the service log."""
    args = [os.fspath(a) for a in argv]
    require_binary(args[0])
    done = subprocess.run(
        args, cwd=service.dir, capture_output=True, text=True, check=False,
        user=user, group=user, extra_groups=[] if user else None,
    )
    if done.returncode != 0:
        raise ServiceError(
            f"{service.name}: {' '.join(args)} failed with status {done.returncode}\n"
            f"{done.stdout}{done.stderr}"
        )


def _env_without(*prefixes: str, **extra: str) -> dict[str, str]:
    """Our environment minus variables the daemon would read as configuration (``ETCD_*``,
    ``REGISTRY_*`` override their command line or config file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def _log_contains(text: str) -> ReadyCheck:
    def check(service: Service) -> bool:
        return text in service.log_tail(200)

    return check


def _http_ready(path: str, *, body: bytes | None = None) -> ReadyCheck:
    def check(service: Service) -> bool:
        try:
            got, content = http_get(f"http://{service.host}:{service.port}{path}", timeout=1.0)
        except OSError:
            return False
        return got == 200 and (body is None or content.strip() == body)

    return check


def _banner_ready(send: bytes, expect: tuple[bytes, ...]) -> ReadyCheck:
    """Ready once the port answers ``send`` with a reply starting with one of ``expect``."""

    def check(service: Service) -> bool:
        try:
            with socket.create_connection((service.host, service.port), timeout=1.0) as sock:
                if send:
                    sock.sendall(send)
                return sock.recv(64).startswith(expect)
        except OSError:
            return False

    return check


# --------------------------------------------------------------------------- the services


def start_process(
    name: str,
    argv: Callable[[Service], Sequence[Arg]],
    *,
    ready: ReadyCheck | None = None,
    host: str = LOOPBACK,
    timeout: float = START_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Service:
    """Any command as a managed service: ``argv`` gets the prepared ``Service`` (for its port and
    directory); readiness defaults to the port accepting connections."""
    service = Service(name, host)
    with service.cleanup_on_error():
        service.launch(
            argv(service),
            ready=ready or (lambda s: port_open(s.host, s.port, timeout=0.2)),
            timeout=timeout,
            env=env,
        )
    return service


def start_redis(
    host: str = LOOPBACK,
    *,
    password: str | None = None,
    protected_mode: bool = False,
    port: int | None = None, timeout: float = START_TIMEOUT,
) -> Service:
    """redis-server with no persistence.  Protected mode only refuses non-loopback clients, so it
    changes what redis reports, not whether our loopback clients get in."""
    service = Service("redis", host, port=port)
    with service.cleanup_on_error():
        service.url = f"redis://{host}:{service.port}/0"
        service.password = password
        argv = ["redis-server", "--port", str(service.port), "--bind", host,
                "--protected-mode", "yes" if protected_mode else "no",
                "--save", "", "--appendonly", "no", "--dir", str(service.dir)]
        if password:
            argv += ["--requirepass", password]
        # +PONG without a password, -NOAUTH with one: either way redis is serving.
        service.launch(argv, ready=_banner_ready(b"PING\r\n", (b"+PONG", b"-NOAUTH")), timeout=timeout)
    return service


def start_rabbitmq(host: str = LOOPBACK, *, timeout: float = START_TIMEOUT) -> Service:
    """A RabbitMQ node of its own: its own node name, Erlang cookie (HOME), data and log folders,
    distribution port and port mapper (epmd, run in the service's process group so stopping the
    service stops it too); no plugins. ``url`` is the AMQP URL with the guest user, allowed here
    from any address of the node's listener (loopback only, by construction)."""
    service = Service("rabbitmq", host)
    with service.cleanup_on_error():
        service.url = f"amqp://guest:guest@{host}:{service.port}//"
        epmd, dist = free_port(), free_port()
        (service.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = {host}:{service.port}\n"
                                                    "loopback_users = none\n")
        (service.dir / "enabled_plugins").write_text("[].\n")
        env = {**_env_without("RABBITMQ_", "ERL_"), "HOME": str(service.dir),
               "RABBITMQ_NODENAME": f"cw{service.port}@localhost", "RABBITMQ_NODE_PORT": str(service.port),
               "RABBITMQ_DIST_PORT": str(dist), "ERL_EPMD_PORT": str(epmd),
               "RABBITMQ_MNESIA_BASE": str(service.dir / "mnesia"), "RABBITMQ_LOG_BASE": str(service.dir / "log.d"),
               "RABBITMQ_CONFIG_FILE": str(service.dir / "rabbitmq"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(service.dir / "enabled_plugins"),
               "RABBITMQ_PID_FILE": str(service.dir / "pid")}
        server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        require_binary(server)
        # AMQP 0-9-1 protocol header: a broker answers with Connection.Start (a method frame, type 1)
        service.launch(["sh", "-c", f'epmd -port {epmd} & exec "{server}"'],
                       ready=_banner_ready(b"AMQP\x00\x00\x09\x01", (b"\x01\x00\x00",)), timeout=timeout,
                       env=env)
    return service


def start_etcd(host: str = LOOPBACK, *, port: int | None = None,
    timeout: float = START_TIMEOUT) -> Service:
    """A one-member etcd 3.4 without auth; ``url`` is the client URL, whose v3 JSON gateway
    answers ``POST /v3/kv/range``.  It also listens on a second (peer) port."""
    service = Service("etcd", host, port=port)
    with service.cleanup_on_error():
        service.url = f"http://{host}:{service.port}"
        peer = f"http://{host}:{free_port(host)}"
        argv: list[Arg] = ["etcd", "--name", "t", "--data-dir", service.dir / "data", "--logger", "zap",
                "--listen-client-urls", service.url, "--advertise-client-urls", service.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}"]
        service.launch(argv, ready=_http_ready("/version"), timeout=timeout, env=_env_without("ETCD_"))
    return service


def start_sshd(
    host: str = LOOPBACK,
    *,
    password_auth: bool = True,
    permit_root_login: Literal["yes", "no", "prohibit-password"] = "prohibit-password",
    port: int | None = None, timeout: float = START_TIMEOUT,
) -> Service:
    """OpenSSH in the foreground (``-D``) with a fresh ed25519 host key.

    ``UsePAM no``: nobody logs in, the scanner only asks which methods are offered, and without PAM
    ``PasswordAuthentication`` alone decides whether "password" is among them.  Keyboard-interactive
    is off so the offer is exactly publickey[,password].  sshd puts each connection in a session of
    its own (setsid), outside our process group; ``LoginGraceTime`` bounds how long such a child can
    outlive an abandoned handshake.
    """
    sshd = require_binary(_SSHD)
    service = Service("sshd", host, port=port)
    with service.cleanup_on_error():
        service.url = f"ssh://{host}:{service.port}"
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir sshd insists on
        key = service.dir / "hostkey"
        _run(service, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
        config = service.dir / "sshd_config"
        config.write_text(
            f"Port {service.port}\n"
            f"ListenAddress {host}\n"
            f"HostKey {key}\n"
            f"PidFile {service.dir / 'pid'}\n"
            f"PasswordAuthentication {'yes' if password_auth else 'no'}\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            f"PermitRootLogin {permit_root_login}\n"
            "LoginGraceTime 15\n"
        )
        service.launch([sshd, "-D", "-e", "-f", config], ready=_banner_ready(b"", (b"SSH-",)),
                       timeout=timeout)
    return service


class PostgresService(Service):
    """A Service that also knows how to be connected to."""

    @property
    def dsn(self) -> str:
        return f"postgresql://{self._credentials}@{self.host}:{self.port}/postgres"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://{self._credentials}@{self.host}:{self.port}/postgres"

    @property
    def _credentials(self) -> str:
        user = self.user or "postgres"
        return f"{user}:{quote(self.password, safe='')}" if self.password else user


def start_postgres(
    host: str = LOOPBACK,
    *,
    auth: Literal["trust", "scram-sha-256"] = "trust",
    password: str | None = None,
    port: int | None = None, timeout: float = START_TIMEOUT,
) -> PostgresService:
    """PostgreSQL 15 as the ``postgres`` user, with a fresh cluster.

    The postmaster runs in the foreground rather than through ``pg_ctl start`` so it stays our child
    and inside our process group; stopping sends it SIGINT, which is what ``pg_ctl stop -m fast``
    sends.  The directory is 0755 and owned by postgres because the
    server, not root, has to reach it.  With scram, ``password`` (default: random) is the postgres
    user's; with trust there is none.
    """
    postgres = require_binary(str(_PG_BIN / "postgres"))
    service = PostgresService("postgres", host, dir_mode=0o755, port=port)
    with service.cleanup_on_error():
        shutil.chown(service.dir, "postgres", "postgres")
        service.user = "postgres"
        service.stop_signal = signal.SIGINT  # "fast" shutdown: does not wait for clients to leave
        data, pwfile = service.dir / "data", service.dir / "pwfile"
        initdb: list[Arg] = [_PG_BIN / "initdb", "-D", data, "-U", "postgres", f"--auth={auth}"]
        if auth != "trust":
            service.password = password or secrets.token_urlsafe(16)
            pwfile.write_text(service.password + "\n")
            shutil.chown(pwfile, "postgres", "postgres")
            initdb.append(f"--pwfile={pwfile}")
        _run(service, initdb, user="postgres")
        pwfile.unlink(missing_ok=True)
        # initdb only admits 127.0.0.1; clients of a service on 127.0.1.x may come from that range.
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all 127.0.0.0/8 {auth}\n")
        service.url = f"postgresql://postgres@{host}:{service.port}/postgres"
        argv: list[Arg] = [postgres, "-D", data, "-p", str(service.port), "-k", service.dir,
                "-c", f"listen_addresses={host}"]
        service.launch(argv, ready=_log_contains("ready to accept connections"), timeout=timeout,
                       env=_env_without("PG", HOME=str(service.dir)), user="postgres")
    return service


def start_registry(host: str = LOOPBACK, *, port: int | None = None,
    timeout: float = START_TIMEOUT) -> Service:
    """A Docker distribution registry without auth, deletes enabled, storing under its own dir.
    It never reads /etc/docker/registry/config.yml, which would bind every interface."""
    service = Service("registry", host, port=port)
    with service.cleanup_on_error():
        service.url = f"http://{host}:{service.port}"
        config = service.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info}\n"
            f"http: {{addr: '{host}:{service.port}'}}\n"
            "storage:\n"
            f"  filesystem: {{rootdirectory: '{service.dir / 'data'}'}}\n"
            "  delete: {enabled: true}\n"
        )
        service.launch(["docker-registry", "serve", str(config)], ready=_http_ready("/v2/"), timeout=timeout,
                       env=_env_without("REGISTRY_"))
    return service


EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
CLAMD_MARKER = b"CLOUDWARD-CLAMD-TEST-MARKER-7f3a"  # the default body signature's bytes


class ClamdService(Service):
    """A clamd listening on both a unix socket (``socket``, in its directory) and TCP (``port``)."""

    def __init__(self, host: str = LOOPBACK) -> None:
        super().__init__("clamd", host)
        self.socket = self.dir / "clamd.ctl"

    @property
    def unix_address(self) -> str:
        return f"unix:{self.socket}"

    @property
    def tcp_address(self) -> str:
        return f"tcp://{self.host}:{self.port}"


def start_clamd(signatures: dict[str, str] | None = None, *, stream_max: str = "64M",
                host: str = LOOPBACK, timeout: float = 60.0) -> ClamdService:
    """clamd with its own signature database (no internet here, so no official one): EICAR by MD5
    (`.hdb`) and CLAMD_MARKER as a body signature (`.ndb`), plus `signatures` (file name -> text).
    Listens on a unix socket (``service.socket``) and on TCP (``service.port``), loopback only.

    Never reads /etc/clamav: the Debian clamd/freshclam services are not needed (and not started).
    With a tiny database clamd answers PING within about 0.05 s.  Its log goes to ``clamd.log``
    and, in the foreground, to stderr too, so a bad signature file shows in the start error."""
    service = ClamdService(host)
    with service.cleanup_on_error():
        db = service.dir / "db"
        db.mkdir()
        (db / "cloudward-test.hdb").write_text(f"{EICAR_MD5}:68:Cloudward.Test.EICAR\n")
        (db / "cloudward-test.ndb").write_text(f"Cloudward.Test.Marker:0:*:{CLAMD_MARKER.hex()}\n")
        for name, text in (signatures or {}).items():
            if Path(name).name != name or name in {".", ".."}:
                raise ValueError(f"a signature file is named by a plain file name, not {name!r}")
            (db / name).write_text(text)
        config = service.dir / "clamd.conf"
        config.write_text(
            f"LocalSocket {service.socket}\nTCPSocket {service.port}\nTCPAddr {host}\n"
            f"DatabaseDirectory {db}\nForeground yes\nLogFile {service.dir / 'clamd.log'}\n"
            f"PidFile {service.dir / 'clamd.pid'}\nTemporaryDirectory {service.dir}\n"
            f"StreamMaxLength {stream_max}\nMaxThreads 4\nUser root\nLogSyslog no\n")
        service.launch(["clamd", "-c", str(config)], ready=_clamd_pong, timeout=timeout)
    return service


def _clamd_pong(service: Service) -> bool:
    sock_path = getattr(service, "socket", None)
    if sock_path is None or not Path(sock_path).exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(sock_path))
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False


def start_podman_api(host: str = LOOPBACK, *, port: int | None = None,
    timeout: float = START_TIMEOUT) -> Service:
    """podman's Docker-compatible REST API, unauthenticated on TCP, like an exposed dockerd.

    Storage, runtime state, the engine's tmp dir and network configs all live under the service
    directory, so the host's images and containers are never touched.  The vfs driver is used
    because overlay mounts its directory, which would then outlive the process and block removal.
    """
    service = Service("podman", host, port=port)
    with service.cleanup_on_error():
        service.url = f"http://{host}:{service.port}"
        conf = service.dir / "containers.conf"
        conf.write_text(
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'tmp_dir = "{service.dir / "tmp"}"\n'
            "[network]\n"
            f'network_config_dir = "{service.dir / "networks"}"\n'
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        )
        argv: list[Arg] = ["podman", "--root", service.dir / "root", "--runroot", service.dir / "runroot",
                "--storage-driver", "vfs", "system", "service", "--time=0", f"tcp:{host}:{service.port}"]
        service.launch(argv, ready=_http_ready("/_ping", body=b"OK"), timeout=timeout,
                       env=_env_without("CONTAINERS_", CONTAINERS_CONF=str(conf)))
    return service


def start_jupyter(
    host: str = LOOPBACK, *, token: str | None = None, port: int | None = None,
    timeout: float = START_TIMEOUT
) -> Service:
    """A jupyter-server from this interpreter.  ``token``: None for a random one, "" for no
    authentication at all (no token, no password, no XSRF check: the exposed-notebook case)."""
    if importlib.util.find_spec("jupyter_server") is None:
        raise MissingBinaryError(
            "jupyter-server is not installed in this interpreter: run `make test` (scripts/setup "
            "installs the dev dependencies)"
        )
    service = Service("jupyter", host, port=port)
    with service.cleanup_on_error():
        service.url = f"http://{host}:{service.port}/"
        service.token = secrets.token_hex(16) if token is None else token
        root = service.dir / "notebooks"
        root.mkdir()
        argv = [sys.executable, "-m", "jupyter_server", f"--ip={host}", f"--port={service.port}",
                "--ServerApp.port_retries=0", "--no-browser", "--allow-root",
                f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={service.token}"]
        if not service.token:
            argv += ["--PasswordIdentityProvider.hashed_password=", "--ServerApp.disable_check_xsrf=True"]
        env = _env_without(
            "JUPYTER_",
            JUPYTER_CONFIG_DIR=str(service.dir / "config"),
            JUPYTER_DATA_DIR=str(service.dir / "data"),
            JUPYTER_RUNTIME_DIR=str(service.dir / "runtime"),
            JUPYTER_PLATFORM_DIRS="1",
        )
        service.launch(argv, ready=_http_ready("/api"), timeout=timeout, env=env)
    return service


# --------------------------------------------------------------------------- many at once

P = ParamSpec("P")
S = TypeVar("S", bound=Service)


class ServicePool:
    """Starts services on demand and stops them all together: the body of the factory fixtures,
    and usable as a context manager by benchmarks that spread services over many addresses."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def start(self, starter: Callable[P, S], /, *args: P.args, **kwargs: P.kwargs) -> S:
        service = starter(*args, **kwargs)
        self.services.append(service)
        return service

    def start_many(self, starter: Callable[..., S], hosts: Sequence[str], **kwargs: Any) -> list[S]:
        """One service per host, started in parallel (startup is mostly waiting)."""
        with ThreadPoolExecutor(max_workers=min(16, len(hosts) or 1)) as pool:
            futures = [pool.submit(starter, host, **kwargs) for host in hosts]
            started: list[S] = []
            errors: list[BaseException] = []
            for future in futures:
                try:
                    started.append(future.result())
                except BaseException as err:
                    errors.append(err)
        self.services.extend(started)
        if errors:
            raise errors[0]
        return started

    def stop(self) -> None:
        while self.services:
            self.services.pop().stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
