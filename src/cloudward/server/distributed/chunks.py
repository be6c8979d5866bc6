"""A distributed exposure scan cut into chunks: which hosts each task scans, and how a chunk
travels through the broker.

A chunk is a list of hosts (address plus the name the user gave, if any), the ports, the
validated exposure settings and the parent scan it belongs to. The addresses are already
resolved when the scan is planned, so every chunk of one scan scans exactly the hosts a local
scan of the same targets would, whatever each worker's resolver says. Hosts are cut in the order
the local scan walks them, so chunk N is the same hosts every time the same scan is planned.

A payload comes off the broker, which is a network service: `Chunk.from_payload` checks every
field (types, sizes, addresses, ports) and refuses anything else with a clear error, so a
forged or corrupted message cannot make a worker scan something malformed or hold unbounded
memory.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cloudward.core.config import ExposureSettings
from cloudward.core.errors import InputError
from cloudward.exposure.targets import MAX_PORT, Host, Targets, TargetSpec

PAYLOAD_VERSION = 1
MAX_PAYLOAD_HOSTS = 1 << 20
MAX_PAYLOAD_PORTS = MAX_PORT
MAX_NAME_CHARS = 253


@dataclass(frozen=True)
class Chunk:
    scan_id: str
    index: int
    count: int
    hosts: tuple[Host, ...]
    ports: tuple[int, ...]
    settings: ExposureSettings
    max_open_per_host: int
    job_id: str | None = None

    @property
    def task_id(self) -> str:
        """Stable per chunk: a re-sent chunk has the same id, which makes duplicates easy to spot."""
        return f"{self.scan_id}-chunk-{self.index}"

    def targets(self) -> Targets:
        """The chunk's hosts as `Targets`, names kept, in the planned order."""
        return Targets([TargetSpec(h.address, addresses=(ipaddress.ip_address(h.address),), name=h.name)
                        for h in self.hosts])

    def payload(self) -> dict[str, Any]:
        return {"v": PAYLOAD_VERSION, "scan": self.scan_id, "index": self.index, "count": self.count,
                "hosts": [[h.address, h.name] for h in self.hosts], "ports": list(self.ports),
                "settings": self.settings.model_dump(mode="json"), "max_open_per_host": self.max_open_per_host,
                "job": self.job_id}

    @classmethod
    def from_payload(cls, data: Any) -> Chunk:
        """Validate a payload from the broker; InputError naming the first bad field."""
        if not isinstance(data, Mapping):
            raise InputError("chunk payload: not an object")
        if data.get("v") != PAYLOAD_VERSION:
            raise InputError(f"chunk payload: unknown version {str(data.get('v'))[:20]!r}")
        scan_id = _ident(data.get("scan"), "scan")
        job_id = None if data.get("job") is None else _ident(data.get("job"), "job")
        count = _int(data.get("count"), "count", 1, MAX_PAYLOAD_HOSTS)
        index = _int(data.get("index"), "index", 0, count - 1)
        max_open = _int(data.get("max_open_per_host"), "max_open_per_host", 1, MAX_PORT)
        ports = data.get("ports")
        if not isinstance(ports, list) or not 1 <= len(ports) <= MAX_PAYLOAD_PORTS:
            raise InputError("chunk payload: ports must be a list of 1-65535 ports")
        checked_ports = tuple(_int(p, "ports", 1, MAX_PORT) for p in ports)
        hosts = data.get("hosts")
        if not isinstance(hosts, list) or not 1 <= len(hosts) <= MAX_PAYLOAD_HOSTS:
            raise InputError("chunk payload: hosts must be a non-empty list")
        settings = data.get("settings")
        if not isinstance(settings, Mapping):
            raise InputError("chunk payload: settings must be an object")
        try:
            exposure = ExposureSettings.model_validate(dict(settings))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(f"chunk payload: settings.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return cls(scan_id, index, count, tuple(_host(h) for h in hosts), checked_ports, exposure, max_open, job_id)


def _ident(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not all(c.isalnum() or c in "-_." for c in value):
        raise InputError(f"chunk payload: {name} must be an id of 1-64 letters, digits, '-', '_' or '.'")
    return value


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"chunk payload: {name} must be a whole number from {low} to {high}")
    return value


def _host(item: Any) -> Host:
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise InputError("chunk payload: each host must be [address, name or null]")
    address, name = item
    try:
        parsed = ipaddress.ip_address(address) if isinstance(address, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise InputError(f"chunk payload: host address {str(address)[:60]!r} is not an IP address")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS
                             or not name.isprintable()):
        raise InputError("chunk payload: a host name must be printable text of 1-253 characters")
    return Host(str(parsed), name)


def hosts_per_chunk(total: int, wanted: int, max_chunks: int) -> int:
    """`wanted`, raised when needed so that `total` hosts make at most `max_chunks` chunks."""
    return max(1, wanted, math.ceil(total / max(1, max_chunks)))


def split_hosts(hosts: Iterable[Host], per_chunk: int) -> Iterator[tuple[Host, ...]]:
    """Consecutive groups of `per_chunk` hosts (the last may be shorter), lazily."""
    group: list[Host] = []
    for host in hosts:
        group.append(host)
        if len(group) >= per_chunk:
            yield tuple(group)
            group = []
    if group:
        yield tuple(group)
