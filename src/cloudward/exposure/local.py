"""This machine's listening TCP sockets, read from /proc/net/tcp and /proc/net/tcp6.

`cloudward audit` scans what this host exposes the way an attacker on the network would, but it
starts from the kernel's own list of listeners instead of guessing ports, so nothing listening is
missed and no other machine is touched. The kernel's table is read directly (no `ss`/`netstat`
dependency, no root needed: every user may read the socket table of their network namespace).

A socket bound to the wildcard address (0.0.0.0 or ::) is scanned through the loopback address of
its family, but remembered as bound to all interfaces — the fact that turns "Redis without a
password" from a local nuisance into TeamTNT's front door. IPv4-mapped IPv6 binds are scanned over
IPv4; link-local IPv6 binds are skipped, since /proc does not say which interface's scope they
belong to and a connect without a scope id cannot reach them.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import NamedTuple

from cloudward.core.errors import ScanError

LISTEN = "0A"  # TCP_LISTEN in include/net/tcp_states.h, as /proc prints it
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - we read binds, we do not bind


class Listener(NamedTuple):
    """A listening socket: `address` is what to connect to, `bind` what it is bound to."""

    address: str
    port: int
    bind: str

    @property
    def all_interfaces(self) -> bool:
        return self.bind in WILDCARDS


def decode_address(field: str) -> tuple[str, int]:
    """`0100007F:1F90` -> ("127.0.0.1", 8080); IPv6 fields carry 32 hex digits.

    The kernel prints the address as 32-bit words in host byte order, so on a little-endian
    machine each group of four bytes is reversed.
    """
    hex_address, _, hex_port = field.partition(":")
    if len(hex_address) not in (8, 32) or not hex_port:
        raise ValueError(f"not a /proc/net/tcp address: {field!r}")
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    return str(address), int(hex_port, 16)


def parse_proc_net_tcp(text: str) -> list[tuple[str, int]]:
    """(bound address, port) of every LISTEN socket in one /proc/net/tcp{,6} table."""
    found: list[tuple[str, int]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != LISTEN:
            continue
        try:
            found.append(decode_address(fields[1]))
        except ValueError:
            continue
    return found


def to_listener(bind: str, port: int) -> Listener | None:
    """Where to connect to reach a socket bound to `bind`; None when it cannot be reached."""
    if bind in WILDCARDS:
        return Listener(WILDCARDS[bind], port, bind)
    address = ipaddress.ip_address(bind)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            mapped = str(address.ipv4_mapped)
            return Listener(WILDCARDS.get(mapped, mapped), port, mapped)
        if address.is_link_local:
            return None
    return Listener(bind, port, bind)


def local_targets(proc_net: Path = Path("/proc/net")) -> list[Listener]:
    """Every listening TCP socket of this network namespace, de-duplicated, sorted.

    Raises ScanError when neither table can be read (not Linux, or /proc not mounted).
    """
    tables = []
    problems = []
    for name in ("tcp", "tcp6"):
        try:
            tables.append((proc_net / name).read_text(encoding="ascii", errors="replace"))
        except OSError as exc:
            problems.append(f"{proc_net / name}: {exc.strerror or exc}")
    if not tables:
        raise ScanError("cannot list this machine's listening sockets: " + "; ".join(problems))
    chosen: dict[tuple[str, int], Listener] = {}
    for text in tables:
        for bind, port in parse_proc_net_tcp(text):
            listener = to_listener(bind, port)
            if listener is None:
                continue
            key = (listener.address, listener.port)
            # Two sockets reachable the same way (SO_REUSEPORT, a v4-mapped bind next to a v4 one):
            # keep the widest bind, which is the one worth reporting.
            if key not in chosen or listener.all_interfaces:
                chosen[key] = listener
    return sorted(chosen.values(), key=lambda item: (":" in item.address, item.address, item.port))
