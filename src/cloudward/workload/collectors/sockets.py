"""TCP sockets of this machine and its containers (live /proc/net/tcp{,6}): peer, port, owning process.

Why: a miner has to reach its pool, and pools listen on a handful of unusual ports (3333, 4444,
5555, 7777, 14444, 45700 …); an implant talks to its actor's address. The kernel's socket table
shows those connections whatever the process is called, and the socket inode found under
/proc/PID/fd says which process holds each. Every network namespace in use is read (through one
of its processes), so a miner inside a container is seen from the host.

Facts per socket: state, direction (inbound when the local port is one this namespace listens on),
local and remote address and port, whether the remote port is a pool port or the remote address an
IOC, and the owning pid, exe, comm and package. Only LISTEN, ESTABLISHED and SYN_SENT sockets are
described; the rest carry no owner.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cloudward.workload.collectors._proc import Gone, listed_pids, namespace, pool_ports, read_exe, read_proc
from cloudward.workload.observation import HostContext, HostObservation

LIVE_ONLY = True

MAX_SOCKETS = 20_000  # per audit
MAX_FDS = 500_000  # file descriptors examined to find socket owners
MAX_NAMESPACES = 256
STATES = {"01": "established", "02": "syn_sent", "0A": "listen"}  # include/net/tcp_states.h


@dataclass(frozen=True, slots=True)
class Socket:
    state: str
    local: str
    local_port: int
    remote: str
    remote_port: int
    inode: int
    uid: int


def _address(field: str) -> tuple[str, int]:
    """`0100007F:0D05` -> ("127.0.0.1", 3333). The kernel prints 32-bit words in host order."""
    hex_address, _, hex_port = field.partition(":")
    raw = bytes.fromhex(hex_address)
    if len(raw) not in (4, 16):
        raise ValueError(f"bad address {field!r}")
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), int(hex_port, 16)


def parse_table(text: str) -> list[Socket]:
    """The LISTEN/ESTABLISHED/SYN_SENT rows of one /proc/net/tcp or tcp6 table."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] not in STATES:
            continue
        try:
            local, local_port = _address(fields[1])
            remote, remote_port = _address(fields[2])
            found.append(Socket(STATES[fields[3]], local, local_port, remote, remote_port, int(fields[9]),
                                int(fields[7])))
        except ValueError:
            continue
    return found


def socket_owners(pids: list[int], limit: int = MAX_FDS) -> tuple[dict[int, int], dict[str, int]]:
    """socket inode -> pid, and network namespace -> one pid in it (to read its table)."""
    owners: dict[int, int] = {}
    spaces: dict[str, int] = {}
    seen = 0
    for pid in pids:
        net = namespace(pid, "net")
        if net and net not in spaces and len(spaces) < MAX_NAMESPACES:
            spaces[net] = pid
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            seen += 1
            if seen > limit:
                return owners, spaces
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(int(target[8:-1]), pid)
    return owners, spaces


def _process(ctx: HostContext, pid: int, own_mnt: str | None, cache: dict[int, dict[str, Any]]) -> dict[str, Any]:
    if pid in cache:
        return cache[pid]
    facts: dict[str, Any] = {"pid": pid}
    try:
        facts["comm"] = read_proc(pid, "comm", 64).decode("utf-8", "replace").strip()
        exe = read_exe(pid)
    except (Gone, OSError):
        cache[pid] = facts
        return facts
    facts["exe"] = exe.path
    if exe.path and not exe.memfd and not exe.deleted and namespace(pid, "mnt") == own_mnt:
        owned = ctx.packages().owned(exe.path)
        if owned is not None:
            facts["exe_packaged"] = owned
    cache[pid] = facts
    return facts


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    if not ctx.live:
        return
    ports = pool_ports(ctx)
    own_net, own_mnt = namespace("self", "net"), namespace("self", "mnt")
    owners, spaces = socket_owners(listed_pids())
    if own_net is None or own_net not in spaces:
        spaces[own_net or "self"] = -1
    processes: dict[int, dict[str, Any]] = {}
    emitted = 0
    for net, reader in spaces.items():
        sockets: list[Socket] = []
        for table in ("tcp", "tcp6"):
            name = f"/proc/{'self' if reader < 0 else reader}/net/{table}"
            try:
                sockets.extend(parse_table(read_proc("self" if reader < 0 else reader, f"net/{table}",
                                                     8 * 1024 * 1024).decode("ascii", "replace")))
            except Gone:
                continue
            except OSError as exc:
                if not isinstance(exc, FileNotFoundError):  # no IPv6 in this kernel or namespace
                    ctx.error(name, f"cannot read {name}: {exc}")
        listening = {s.local_port for s in sockets if s.state == "listen"}
        for sock in sockets:
            if emitted >= MAX_SOCKETS:
                ctx.error("/proc/net/tcp", f"more than {MAX_SOCKETS} sockets; the rest were not described")
                return
            emitted += 1
            facts: dict[str, Any] = {
                "state": sock.state,
                "local_address": sock.local,
                "local_port": sock.local_port,
                "uid": sock.uid,
                "in_container": net != own_net,
            }
            if sock.state == "listen":
                facts["direction"] = "listen"
                facts["pool_port"] = sock.local_port in ports
                facts["all_interfaces"] = sock.local in ("0.0.0.0", "::")  # noqa: S104 - reading binds
            else:
                facts["direction"] = "inbound" if sock.local_port in listening else "outbound"
                facts["remote_address"] = sock.remote
                facts["remote_port"] = sock.remote_port
                facts["remote_loopback"] = _loopback(sock.remote)
                facts["pool_port"] = facts["direction"] == "outbound" and sock.remote_port in ports
                indicator = ctx.iocs.match_ip(sock.remote)
                if indicator is not None:
                    facts["ioc_ip"] = indicator.value
                    facts["ioc_source"] = indicator.source
            owner = owners.get(sock.inode)
            if owner is not None:
                facts.update(_process(ctx, owner, own_mnt, processes))
            who = facts.get("exe") or facts.get("comm") or f"uid {sock.uid}"
            if sock.state == "listen":
                key = f"listen {sock.local}:{sock.local_port} {who}"
            elif facts["direction"] == "inbound":
                key = f"inbound {sock.local_port} <- {sock.remote} {who}"
            else:
                key = f"{who} -> {sock.remote}:{sock.remote_port}"
            yield HostObservation("connection", facts, path=f"/proc/net/{'tcp6' if ':' in sock.local else 'tcp'}",
                                  key=key)
