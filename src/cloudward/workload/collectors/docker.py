"""Docker Engine access: TCP API endpoints without TLS client verification, docker.sock mode, docker group.

Why: the Docker Engine API is root on the host for whoever can talk to it (`docker run -v /:/host
--privileged`). TeamTNT's first wave swept the internet for port 2375 and started its miner and
worm containers there. This collector reads what makes the API reachable: `hosts` and `tls*` in
/etc/docker/daemon.json, `-H tcp://…` / `--tlsverify` on dockerd's ExecStart in docker.service and
its drop-ins (an empty `ExecStart=` resets, as systemd does), DOCKER_OPTS in /etc/default/docker,
and `ListenStream=` / `SocketMode=` of docker.socket. Subjects: `docker_daemon` (one, when Docker
is installed), `docker_socket` (each API socket file present: mode and owner) and `docker_group`
(the members of the `docker` group, every one of them root-equivalent).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import stat
from collections.abc import Iterator
from typing import Any

from cloudward.workload.observation import HostContext, HostObservation

__all__ = ["collect", "endpoint_is_loopback", "read_group_file", "systemd_directives"]

DAEMON_JSON = "/etc/docker/daemon.json"
DEFAULT_FILE = "/etc/default/docker"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
BINARIES = ("/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/local/bin/dockerd")
MAX_FILE_BYTES = 1024 * 1024
_TCP_HOST = re.compile(r"^(tcp|http|https)://", re.IGNORECASE)


def endpoint_is_loopback(endpoint: str) -> bool:
    """tcp://127.0.0.1:2375 → True; tcp://0.0.0.0:2375, tcp://:2375, tcp://host:2375 → False."""
    rest = _TCP_HOST.sub("", endpoint.strip())
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 or rest.startswith("[") else rest
    if re.fullmatch(r"\d+", rest):  # a bare port (ListenStream=2375): every interface
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def systemd_directives(text: str, section: str) -> list[tuple[str, str, int]]:
    """(key, value, line) of one [section] of a unit file, with backslash continuations joined."""
    out: list[tuple[str, str, int]] = []
    current = ""
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if pending:
            line = pending + " " + line.lstrip()
        else:
            start = number
            if line.lstrip().startswith(("#", ";")):
                continue
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
            continue
        if current != section or "=" not in stripped:
            continue
        key, _, value = stripped.partition("=")
        out.append((key.strip(), value.strip(), start))
    return out


def _read(ctx: HostContext, path: str, limit: int = MAX_FILE_BYTES) -> str | None:
    return ctx.read_config(path, limit)


def _unit_files(ctx: HostContext, unit: str) -> list[str]:
    """The unit file systemd would load (first of the unit dirs) followed by its drop-ins, in order."""
    files: list[str] = []
    for directory in UNIT_DIRS:
        if ctx.root.is_file(f"{directory}/{unit}"):
            files.append(f"{directory}/{unit}")
            break
    dropins: dict[str, str] = {}
    for directory in reversed(UNIT_DIRS):  # /etc overrides a same-named drop-in in /lib
        for path in ctx.root.glob(f"{directory}/{unit}.d", ".conf"):
            dropins[path.rsplit("/", 1)[1]] = path
    files.extend(dropins[name] for name in sorted(dropins))
    return files


def _dockerd_flags(args: list[str]) -> tuple[list[str], dict[str, bool]]:
    hosts: list[str] = []
    flags = {"tls": False, "tlsverify": False}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in ("-H", "--host"):
            if eq:
                hosts.append(value)
            elif i + 1 < len(args):
                hosts.append(args[i + 1])
                i += 1
        elif arg.startswith("-H") and len(arg) > 2:
            hosts.append(arg[2:])
        elif name in ("--tls", "--tlsverify"):
            flags[name[2:]] = not eq or value.lower() in ("true", "1", "yes")
        i += 1
    return hosts, flags


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def _daemon(ctx: HostContext) -> dict[str, Any] | None:
    endpoints: list[dict[str, Any]] = []
    tls = tlsverify = False
    sources: dict[str, str] = {}
    facts: dict[str, Any] = {}
    seen_any = any(ctx.root.is_file(b) for b in BINARIES)

    text = _read(ctx, DAEMON_JSON)
    if text is not None:
        seen_any = True
        try:
            config = json.loads(text) if text.strip() else {}
            if not isinstance(config, dict):
                raise ValueError("top level is not an object")
        except ValueError as exc:
            ctx.error(DAEMON_JSON, f"malformed daemon.json: {exc}")
            facts["daemon_json_error"] = str(exc)[:200]
            config = {}
        hosts = config.get("hosts", [])
        facts["daemon_json_hosts"] = bool(hosts)
        for host in hosts if isinstance(hosts, list) else [hosts]:
            if isinstance(host, str) and _TCP_HOST.match(host):
                endpoints.append({"endpoint": host, "source": DAEMON_JSON})
        if config.get("tls") is True:
            tls = True
            sources["tls"] = DAEMON_JSON
        if config.get("tlsverify") is True:
            tlsverify = True
            sources["tlsverify"] = DAEMON_JSON

    exec_start: list[tuple[str, str]] = []  # (command, file:line); an empty ExecStart= resets
    unit_files = _unit_files(ctx, "docker.service")
    for path in unit_files:
        seen_any = True
        unit = _read(ctx, path)
        if unit is None:
            continue
        for key, value, line in systemd_directives(unit, "Service"):
            if key == "ExecStart":
                if not value:
                    exec_start = []
                else:
                    exec_start.append((value.lstrip("-@:+!"), f"{path}:{line}"))
    default = _read(ctx, DEFAULT_FILE)
    if default is not None:
        seen_any = True
        for number, raw in enumerate(default.splitlines(), 1):
            key, sep, value = raw.strip().partition("=")
            if sep and key.strip() in ("DOCKER_OPTS", "OPTIONS"):
                exec_start.append(("dockerd " + " ".join(_split(value)), f"{DEFAULT_FILE}:{number}"))
    flag_hosts = False
    for command, where in exec_start:
        hosts, flags = _dockerd_flags(_split(command))
        flag_hosts = flag_hosts or bool(hosts)
        endpoints.extend({"endpoint": h, "source": where} for h in hosts if _TCP_HOST.match(h))
        if flags["tls"]:
            tls = True
            sources.setdefault("tls", where)
        if flags["tlsverify"]:
            tlsverify = True
            sources.setdefault("tlsverify", where)

    socket_mode = "0660"
    for path in _unit_files(ctx, "docker.socket"):
        seen_any = True
        unit = _read(ctx, path)
        if unit is None:
            continue
        for key, value, line in systemd_directives(unit, "Socket"):
            if key == "ListenStream" and value and not value.startswith("/"):
                endpoints.append({"endpoint": value if "://" in value else f"tcp://{value}",
                                  "source": f"{path}:{line}", "socket_activated": True})
            elif key == "SocketMode" and value:
                socket_mode = value
                sources["socket_mode"] = f"{path}:{line}"
    if not seen_any:
        return None
    for endpoint in endpoints:
        endpoint["loopback"] = endpoint_is_loopback(endpoint["endpoint"])
    try:
        world_writable_unit = bool(int(socket_mode, 8) & 0o002)
    except ValueError:
        world_writable_unit = False
    facts.update({
        "tcp_endpoints": endpoints,
        "tcp_enabled": bool(endpoints),
        "tcp_beyond_loopback": any(not e["loopback"] for e in endpoints),
        "tls": tls or tlsverify,  # --tlsverify implies TLS
        "tlsverify": tlsverify,
        "socket_unit_mode": socket_mode,
        "socket_unit_world_writable": world_writable_unit,
        "unit_files": unit_files,
        # dockerd refuses to start when `hosts` is given both in daemon.json and as -H flags.
        "hosts_in_both": bool(facts.get("daemon_json_hosts")) and flag_hosts,
        "sources": sources,
    })
    return facts


def read_group_file(ctx: HostContext) -> dict[str, tuple[int, list[str]]]:
    """group name -> (gid, members) from /etc/group."""
    groups: dict[str, tuple[int, list[str]]] = {}
    text = _read(ctx, "/etc/group")
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit():
            groups[fields[0]] = (int(fields[2]), [m for m in fields[3].split(",") if m])
    return groups


def _primary_members(ctx: HostContext, gid: int) -> list[str]:
    text = _read(ctx, "/etc/passwd")
    out: list[str] = []
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[3] == str(gid):
            out.append(fields[0])
    return out


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    daemon = _daemon(ctx)
    installed = daemon is not None
    if daemon is not None:
        yield HostObservation("docker_daemon", daemon, path=DAEMON_JSON, key="docker_daemon")

    seen: set[tuple[int, int]] = set()
    groups = read_group_file(ctx)
    names = {gid: name for name, (gid, _) in groups.items()}
    for path in SOCKETS:
        try:
            info = ctx.root.stat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            ctx.error(path, f"cannot stat the Docker socket: {exc.strerror or exc}")
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        installed = True
        mode = stat.S_IMODE(info.st_mode)
        yield HostObservation("docker_socket", {
            "is_socket": stat.S_ISSOCK(info.st_mode),
            "mode": f"{mode:04o}",
            "world_writable": bool(mode & 0o002),
            "group_writable": bool(mode & 0o020),
            "owner_uid": info.st_uid,
            "group": names.get(info.st_gid, str(info.st_gid)),
        }, path=path, key="docker.sock")

    if "docker" in groups:
        gid, members = groups["docker"]
        everyone = sorted(set(members) | set(_primary_members(ctx, gid)))
        yield HostObservation("docker_group", {"gid": gid, "members": everyone, "docker_installed": installed},
                              path="/etc/group", key="docker")
