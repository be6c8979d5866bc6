"""Which stored findings a scan *looked at*: the set it may mark fixed when it did not see them.

A scan of host A says nothing about host B, and a scan of ports 6379 says nothing about 2375, so
"not seen" only means "fixed" inside the scan's scope. Each scan kind gets a coverage function; an
unknown kind gets the generic one. When in doubt a function answers "not covered": a finding left
open by mistake is seen again next scan, a finding wrongly closed is a hole nobody looks at.

Coverage functions are pure (no SQL) so they are unit-tested on their own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Subject:
    """The parts of a stored finding that decide whether a scan covered it."""

    target_kind: str
    target_name: str
    location: Mapping[str, Any] = field(default_factory=dict)


Coverage = Callable[[Sequence[str], Mapping[str, Any], Subject], bool]


# --- network targets: IPs, CIDRs, ranges, host names, optionally with a port -------------------


@dataclass(frozen=True)
class _NetTarget:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    first: IPAddress | None = None
    last: IPAddress | None = None
    hostname: str | None = None
    port: int | None = None

    def covers(self, host: str, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        address = _ip(host)
        if address is not None:
            if self.network is not None:
                return address.version == self.network.version and address in self.network
            if self.first is not None and self.last is not None:
                same_family = address.version == self.first.version
                return same_family and int(self.first) <= int(address) <= int(self.last)
        return self.hostname is not None and _hostname(host) == self.hostname


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _hostname(text: str) -> str:
    return text.strip().rstrip(".").lower()


def split_host_port(text: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, `v6`, `host` -> (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit():
            return host, int(port)
    return text, None


def parse_network_target(text: str) -> _NetTarget | None:
    """One user-given exposure target, or None when it is not a form we can reason about."""
    host, port = split_host_port(text)
    if not host:
        return None
    try:
        return _NetTarget(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    if "-" in host:
        start, _, end = host.partition("-")
        first = _ip(start)
        if first is not None:
            last = _ip(end)
            if last is None and end.isdigit() and isinstance(first, ipaddress.IPv4Address):
                last = ipaddress.IPv4Address(int(first) & ~0xFF | int(end)) if int(end) <= 255 else None
            if last is not None and last.version == first.version:
                return _NetTarget(first=first, last=last, port=port)
            return None
    if "/" in host or " " in host:
        return None
    return _NetTarget(hostname=_hostname(host), port=port)


def _subject_endpoint(subject: Subject) -> tuple[str, int | None] | None:
    host = subject.location.get("host")
    port = subject.location.get("port")
    if isinstance(host, str) and host:
        return host, port if isinstance(port, int) else None
    if subject.target_kind == "service":
        return split_host_port(subject.target_name)
    return None


def parse_ports(value: Any) -> Callable[[int | None], bool] | None:
    """`stats["ports"]` as a predicate: a list of ints / "a-b" strings, or "22,80,8000-8100".
    None when the value cannot be understood (the caller then covers nothing)."""
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        return None
    ranges: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            ranges.append((item, item))
            continue
        if not isinstance(item, str):
            return None
        low, _, high = item.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        ranges.append((int(low), int(high or low)))
    return lambda port: port is not None and any(a <= port <= b for a, b in ranges)


def network_covers(targets: Sequence[str], stats: Mapping[str, Any], subject: Subject) -> bool:
    """Exposure scans: the finding's host is inside one of the targets (IP, CIDR, range, name,
    each optionally `:port`) and, when the scan recorded `stats["ports"]`, its port was scanned."""
    endpoint = _subject_endpoint(subject)
    if endpoint is None:
        return False
    host, port = endpoint
    if "ports" in stats:
        scanned = parse_ports(stats["ports"])
        if scanned is None or not scanned(port):
            return False
    return any(t is not None and t.covers(host, port) for t in map(parse_network_target, targets))


# --- everything else: names, paths and prefixes ------------------------------------------------


def _strip_scheme(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    return rest if sep and scheme.isalnum() else text


def _under(name: str, target: str, separators: str) -> bool:
    """`name` is `target` itself or lies beneath it: a path under a directory, a key in a bucket,
    a tag or digest of a repository (`repo:tag`, `repo@sha256:...`), a port of a host."""
    if not target:
        return False
    if name == target:
        return True
    if target[-1] in separators:
        return name.startswith(target)
    return any(name.startswith(target + sep) for sep in separators)


def generic_covers(targets: Sequence[str], stats: Mapping[str, Any], subject: Subject) -> bool:
    """Any kind: the finding's target (or location path) is a target or lies beneath one; a
    finding with a network endpoint is also matched the exposure way."""
    names = [_strip_scheme(subject.target_name)]
    path = subject.location.get("path")
    if isinstance(path, str) and path:
        names.append(path)
    # A file may be called `a:b`; only directories nest paths. Other identities also nest by : and @.
    separators = "/" if subject.target_kind == "path" else "/:@"
    for raw in targets:
        target = _strip_scheme(raw.strip())
        if any(_under(name, target, separators) for name in names):
            return True
    return _subject_endpoint(subject) is not None and network_covers(targets, {}, subject)


def kind_wide(targets: Sequence[str], stats: Mapping[str, Any], subject: Subject) -> bool:
    """Scans that by definition look at everything of their kind (e.g. `audit` reads every
    listener of this machine, so a service that stopped listening is fixed) — unless the scan
    says it was partial (a host collector failed)."""
    return not stats.get("partial")


def host_covers(targets: Sequence[str], stats: Mapping[str, Any], subject: Subject) -> bool:
    """Host audits: a finding is covered when it was made on the same root by a complete audit
    (`--only` or a failed collector makes it partial: it then closes nothing)."""
    if stats.get("partial"):
        return False
    return subject.location.get("root") in targets


def nothing(targets: Sequence[str], stats: Mapping[str, Any], subject: Subject) -> bool:
    """Watchers (the protect proxies, a live traffic monitor) report what happened while they ran,
    never everything there is: an attack not repeated is not an attack fixed. They complete and
    close nothing, whatever their targets."""
    return False


COVERAGE: dict[str, Coverage] = {
    "exposure": network_covers,
    "audit": kind_wide,
    "host": host_covers,
    # `host fim check` compares every monitored path of its root (location.root), like an audit;
    # `host fim watch` only sees what changes while it runs: it says so (partial) and closes nothing.
    "fim": host_covers,
    "fim-watch": host_covers,
    # `iac scan` names files relative to the root it walked (location.root), like an audit's root.
    "iac": host_covers,
    "redis-proxy": nothing,  # `network protect redis`
    "network_monitor": nothing,  # `network monitor` (an `inspect` of a capture file looks at all of it)
}


def covers(kind: str, targets: Sequence[str], stats: Mapping[str, Any], subject: Subject) -> bool:
    """Did a completed scan of `kind` over `targets` look at `subject`? A scan that names no targets
    covers its whole kind (an account-wide or machine-wide scan), unless its kind covers nothing."""
    coverage = COVERAGE.get(kind, generic_covers)
    if not targets and coverage is not nothing:
        return True
    return coverage(targets, stats, subject)


def errored(error_targets: Sequence[str], subject: Subject) -> bool:
    """Did the scan fail on the subject's target? Then it did not look, whatever its scope says."""
    return bool(error_targets) and generic_covers(error_targets, {}, subject)
