"""What to scan: the targets and ports the user named, and nothing else.

Targets are IPv4/IPv6 addresses, CIDRs (both families), host names (resolved once with
getaddrinfo, every address they resolve to is scanned and the name is kept for display) and
`-iL` files with one target per line (`#` starts a comment). Like nmap, a CIDR means *every*
address in it: the network and broadcast addresses of an IPv4 /24 are scanned too (they are
ordinary hosts on many cloud networks, and a /31 or /32 has no such addresses anyway).

Expansion is lazy: `Targets` knows its exact size without building a list, and iterating it
yields one `Host` at a time, so a /16 times 14 ports never materialises a million tuples.
Overlapping targets are scanned once (CIDRs are collapsed; a named address inside a CIDR keeps
its name). A target set larger than `max_hosts` is refused unless the caller explicitly allows it,
because a typo such as `10.0.0.0/8` for `10.0.0.0/24` should not start a 16-million-host scan.

Ports are lists and ranges (`22,80,8000-8100`, `-` for 1-65535, open-ended `-1024` and
`60000-`) and named profiles (`teamtnt`), freely combined: `teamtnt,8000-8100`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudward.core.errors import InputError, UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], list[str]]

# The ports TeamTNT's scanners (masscan/zgrab/pnscan lists in their scripts) went after: SSH,
# Docker API (plain and TLS), etcd, Weave Scope, PostgreSQL, Redis, Kubernetes API, kubelet
# (authenticated and read-only), Jupyter, Elasticsearch, MongoDB and the usual 8080.
TEAMTNT_PORTS: tuple[int, ...] = (
    22, 2375, 2376, 2379, 4040, 5432, 6379, 6443, 8080, 8888, 9200, 10250, 10255, 27017,
)
PORT_PROFILES: dict[str, tuple[int, ...]] = {"teamtnt": TEAMTNT_PORTS}
MAX_PORT = 65535
MAX_TARGET_FILE_BYTES = 64 * 1024 * 1024

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


@dataclass(frozen=True, slots=True)
class Host:
    """One address to connect to; `name` is the host name the user gave, if any (display only)."""

    address: str
    name: str | None = None

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    @property
    def label(self) -> str:
        return f"{self.name} ({self.address})" if self.name else self.address

    def endpoint(self, port: int) -> str:
        """`host:port`, with IPv6 in brackets: the same spelling as `Observation.endpoint`."""
        return f"[{self.address}]:{port}" if ":" in self.address else f"{self.address}:{port}"


@dataclass(frozen=True)
class TargetSpec:
    """One target as the user wrote it, parsed: a network, or a name with its addresses."""

    text: str
    network: IPNetwork | None = None
    addresses: tuple[IPAddress, ...] = ()  # single addresses: a literal IP or a name's addresses
    name: str | None = None

    @property
    def size(self) -> int:
        return self.network.num_addresses if self.network is not None else len(self.addresses)


def resolve_name(name: str) -> list[str]:
    """Every distinct address `name` resolves to (IPv4 and IPv6), in resolver order."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise UsageError(f"target {name!r}: cannot resolve host name: {reason}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _hint(text: str) -> str:
    if re.fullmatch(r"[0-9.]+-[0-9.]+", text):
        return " (address ranges are not supported; use a CIDR such as 10.0.0.0/28)"
    if re.fullmatch(r"[^:\s]+:\d+", text) or (text.startswith("[") and "]:" in text):
        return " (give ports with -p, not host:port)"
    if "://" in text:
        return " (give a host, not a URL)"
    return ""


def parse_target(text: str, resolve: Resolver = resolve_name) -> TargetSpec:
    """Parse one target; UsageError naming it when it is none of IP, CIDR or host name."""
    raw = text.strip()
    if not raw:
        raise UsageError("empty target")
    if "/" in raw:
        try:
            return TargetSpec(raw, network=ipaddress.ip_network(raw.strip("[]"), strict=False))
        except ValueError as exc:
            raise UsageError(f"target {raw!r}: not a valid CIDR: {exc}{_hint(raw)}") from None
    bare = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        return TargetSpec(raw, addresses=(ipaddress.ip_address(bare),))
    except ValueError:
        pass
    last_label = bare.rstrip(".").rsplit(".", 1)[-1]
    # A numeric last label is never a real name: getaddrinfo would read "127.1" or "10.0.0.1-20"
    # in surprising ways, so such input is an error, not a lookup.
    numeric = last_label.isdigit() or re.fullmatch(r"[0-9.-]+", bare) is not None
    if not _HOSTNAME.match(bare) or len(bare) > 253 or numeric:
        raise UsageError(f"target {raw!r}: not an IP address, CIDR or host name{_hint(raw)}")
    addresses: list[IPAddress] = []
    for address in resolve(bare):
        try:
            addresses.append(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            continue
    if not addresses:
        raise UsageError(f"target {raw!r}: host name resolved to no usable address")
    return TargetSpec(raw, addresses=tuple(dict.fromkeys(addresses)), name=bare.rstrip("."))


def read_target_file(path: Path) -> list[str]:
    """Targets from an `-iL` file: one per line, blank lines and `#` comments ignored."""
    try:
        if path.stat().st_size > MAX_TARGET_FILE_BYTES:
            raise InputError(f"{path}: target list larger than {MAX_TARGET_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: target list not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: target list is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read target list: {exc.strerror or exc}") from None
    items = []
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            items.extend(item.split())
    return items


def _addr_key(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


class Targets:
    """A de-duplicated, lazily expanded set of hosts with an exact size."""

    def __init__(self, specs: Sequence[TargetSpec]) -> None:
        self.specs = list(specs)
        v4 = [s.network for s in self.specs if isinstance(s.network, ipaddress.IPv4Network)]
        v6 = [s.network for s in self.specs if isinstance(s.network, ipaddress.IPv6Network)]
        self.networks: list[IPNetwork] = [*ipaddress.collapse_addresses(v4),
                                          *ipaddress.collapse_addresses(v6)]
        # Single addresses (literal IPs and resolved names); a name wins over a bare literal.
        self._singles: dict[tuple[int, int], tuple[IPAddress, str | None]] = {}
        for spec in self.specs:
            for address in spec.addresses:
                key = _addr_key(address)
                if key not in self._singles or (spec.name and not self._singles[key][1]):
                    self._singles[key] = (address, spec.name)
        self._outside = [key for key, (address, _) in self._singles.items()
                         if not any(address.version == n.version and address in n for n in self.networks)]

    def __len__(self) -> int:
        # len() must be an int that fits a C ssize_t; an IPv6 /0 does not, so clamp (callers that
        # need the exact size of such a monster use `size`).
        return min(self.size, 2**62)

    @property
    def size(self) -> int:
        return sum(n.num_addresses for n in self.networks) + len(self._outside)

    def __iter__(self) -> Iterator[Host]:
        names = {key: name for key, (_, name) in self._singles.items() if name}
        for network in self.networks:
            first, last = int(network.network_address), int(network.broadcast_address)
            if network.version == 4:
                for value in range(first, last + 1):
                    yield Host(socket.inet_ntoa(value.to_bytes(4, "big")), names.get((4, value)))
            else:
                for value in range(first, last + 1):
                    yield Host(str(ipaddress.IPv6Address(value)), names.get((6, value)))
        for key in self._outside:
            address, name = self._singles[key]
            yield Host(str(address), name)

    def labels(self) -> list[str]:
        """What was scanned, for `ScanResult.targets`: each target as given, and for a host name
        also the addresses it resolved to (findings name addresses, and the store matches them)."""
        out: list[str] = []
        for spec in self.specs:
            out.append(spec.text)
            if spec.name:
                out.extend(str(a) for a in spec.addresses)
        return list(dict.fromkeys(out))

    def resolved(self) -> dict[str, list[str]]:
        return {spec.name: [str(a) for a in spec.addresses] for spec in self.specs if spec.name}


def parse_targets(
    items: Iterable[str],
    input_file: Path | None = None,
    *,
    max_hosts: int = 65536,
    allow_large: bool = False,
    resolve: Resolver = resolve_name,
) -> Targets:
    """Parse command-line targets plus an optional `-iL` file; refuse an oversized target set."""
    texts = [t for t in items if t.strip()]
    if input_file is not None:
        texts.extend(read_target_file(input_file))
    if not texts:
        raise UsageError("no targets: give IP addresses, CIDRs or host names (or -iL FILE)")
    targets = Targets([parse_target(t, resolve) for t in texts])
    if targets.size > max_hosts and not allow_large:
        biggest = sorted(targets.specs, key=lambda s: s.size, reverse=True)[:3]
        named = ", ".join(f"{s.text} ({s.size:,} addresses)" for s in biggest)
        raise UsageError(
            f"targets cover {targets.size:,} addresses, more than --max-hosts {max_hosts:,} "
            f"(largest: {named}); check for a typo, raise --max-hosts, or pass --allow-large-range"
        )
    return targets


def _port(text: str, item: str) -> int:
    if not text.isdigit():
        raise UsageError(f"port list: {item!r} is not a port, range or profile "
                         f"(profiles: {', '.join(PORT_PROFILES)})")
    value = int(text)
    if not 1 <= value <= MAX_PORT:
        raise UsageError(f"port list: {value} in {item!r} is outside 1-{MAX_PORT}")
    return value


def parse_ports(spec: str | Iterable[str]) -> tuple[int, ...]:
    """`22,80,8000-8100`, `-` (all), `-1024`, `60000-`, profile names; sorted, de-duplicated."""
    chunks = [spec] if isinstance(spec, str) else list(spec)
    ports: set[int] = set()
    for chunk in chunks:
        for raw in chunk.split(","):
            item = raw.strip()
            if not item:
                raise UsageError(f"port list {chunk!r}: empty item")
            profile = PORT_PROFILES.get(item.lower())
            if profile is not None:
                ports.update(profile)
            elif "-" in item:
                low_text, _, high_text = item.partition("-")
                low = _port(low_text.strip(), item) if low_text.strip() else 1
                high = _port(high_text.strip(), item) if high_text.strip() else MAX_PORT
                if low > high:
                    raise UsageError(f"port list: range {item!r} runs backwards")
                ports.update(range(low, high + 1))
            else:
                ports.add(_port(item, item))
    if not ports:
        raise UsageError("empty port list")
    return tuple(sorted(ports))


def format_ports(ports: Iterable[int]) -> str:
    """The compact spelling of a port set (`22,2375-2376,6379`), which `parse_ports` reads back."""
    ordered = sorted(set(ports))
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        start = end = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == end + 1:
            index += 1
            end = ordered[index]
        parts.append(str(start) if start == end else f"{start}-{end}")
        index += 1
    return ",".join(parts)


def endpoints(targets: Iterable[Host], ports: Sequence[int]) -> Iterator[tuple[Host, int]]:
    """Every (host, port), host by host, generated on demand."""
    for host in targets:
        for port in ports:
            yield host, port
