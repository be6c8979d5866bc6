"""docker-compose / compose-spec files: each service described by what it hands the host over.

A service is judged only on what the file says: an unset `user` is not reported (the image
decides), an explicit root user is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from cloudward.conformity.iac.model import Observation
from cloudward.engines.podspec import PRIVILEGED_CAPABILITIES, RUNTIME_SOCKETS, covers, host_path

COMPOSE_NAMES = re.compile(r"^(docker-)?compose(\.[\w-]+)*\.ya?ml$", re.IGNORECASE)
RISKY_PORTS = {2375: "docker", 2376: "docker-tls", 2379: "etcd", 6379: "redis", 10250: "kubelet"}
SENSITIVE_MOUNTS = ("/", "/etc", "/proc/**", "/root", "/var/lib/docker", "/boot", "/sys", "/dev")
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")
_ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a label for "published on every interface", nothing binds here


def _list(node: Any) -> list[Any]:
    return node if isinstance(node, list) else []


def is_compose(name: str, document: Any) -> bool:
    if not isinstance(document, Mapping) or not isinstance(document.get("services"), Mapping):
        return False
    return bool(COMPOSE_NAMES.match(name)) or ("apiVersion" not in document and "kind" not in document)


def _published(entry: Any) -> list[tuple[str, int | None, int | None]]:
    """(host ip, published port, container port) for one `ports` entry (short or long syntax);
    a range gives each port of it that we care about."""
    if isinstance(entry, Mapping):
        target = entry.get("target")
        published = entry.get("published")
        ip = str(entry.get("host_ip", "") or "")
        pub = int(published) if isinstance(published, int) or (isinstance(published, str) and published.isdigit()) \
            else None
        return [(ip, pub, target if isinstance(target, int) else None)]
    if isinstance(entry, int):
        return [("", None, entry)]  # "3000": container port on an ephemeral host port, all interfaces
    if not isinstance(entry, str):
        return []
    text = entry.split("/", 1)[0].strip()
    ip = ""
    if text.startswith("["):  # [::1]:8080:80
        close = text.find("]")
        ip, text = text[1:close], text[close + 2:]
    parts = text.split(":")
    if len(parts) == 3:
        ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    else:
        host, container = "", parts[0]
    out: list[tuple[str, int | None, int | None]] = []
    host_range = _range(host)
    container_range = _range(container)
    if host_range and container_range and len(host_range) == len(container_range):
        out += [(ip, h, c) for h, c in zip(host_range, container_range, strict=True)]
    elif container_range and not host:
        out += [(ip, None, c) for c in container_range]
    elif host_range and container_range:
        out += [(ip, h, container_range[0]) for h in host_range]
    return out


def _range(text: str) -> list[int]:
    text = text.strip()
    low, _, high = text.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        return []
    start, end = int(low), int(high or low)
    if end - start > 70000 or end < start:
        return []
    return [p for p in RISKY_PORTS if start <= p <= end] if end > start else [start]


def _volume_source(entry: Any) -> str | None:
    if isinstance(entry, Mapping):
        if entry.get("type", "bind") == "bind" and isinstance(entry.get("source"), str):
            return str(entry["source"])
        return None
    if isinstance(entry, str) and ":" in entry:
        source = entry.split(":", 1)[0]
        return source if source.startswith("/") else None
    return None


def observations(document: Mapping[str, Any], path: str, line: int) -> Iterator[Observation]:
    services = document.get("services")
    if not isinstance(services, Mapping):
        return
    for name, service in services.items():
        if not isinstance(service, Mapping):
            continue
        published: list[str] = []
        docker_api: list[str] = []
        for entry in _list(service.get("ports")):
            for ip, host_port, container_port in _published(entry):
                exposed = host_port if host_port is not None else container_port
                if ip.startswith(_LOOPBACK) or exposed is None:
                    continue
                for port in {p for p in (host_port, container_port) if p in RISKY_PORTS}:
                    label = f"{ip or _ALL_INTERFACES}:{exposed}->{container_port} ({RISKY_PORTS[port]})"
                    (docker_api if port in (2375, 2376) else published).append(label)
        mounts = [host_path(s) for s in (_volume_source(v) for v in _list(service.get("volumes"))) if s]
        sockets = [m for m in mounts if m != "/" and any(covers(m, s) for s in RUNTIME_SOCKETS)]
        sensitive = [m for m in mounts if m not in sockets and any(covers(m, s) for s in SENSITIVE_MOUNTS)]
        caps = _list(service.get("cap_add"))
        user = service.get("user")
        options = _list(service.get("security_opt"))
        facts: dict[str, Any] = {
            "service": str(name), "image": service.get("image"),
            "privileged": service.get("privileged") is True,
            "network_mode": str(service.get("network_mode", "")),
            "host_network": service.get("network_mode") == "host",
            "pid": str(service.get("pid", "")), "host_pid": service.get("pid") == "host",
            "host_ipc": service.get("ipc") == "host",
            "docker_api_published": sorted(set(docker_api)), "risky_ports_published": sorted(set(published)),
            "runtime_socket_mounts": sockets, "sensitive_mounts": sensitive,
            "strong_capabilities": sorted({str(c).upper() for c in caps} & PRIVILEGED_CAPABILITIES),
            "user": str(user) if user is not None else "unset",
            "explicit_root_user": user is not None and str(user).split(":", 1)[0] in ("root", "0"),
            "unconfined_security": sorted(str(o) for o in options
                                          if str(o).replace("=", ":") in ("seccomp:unconfined",
                                                                          "apparmor:unconfined")),
        }
        service_line = int(getattr(service, "line", 0) or line)
        # the service mapping starts on the line after `name:`; a skip comment above the name applies
        yield Observation("compose_service", facts, path, max(service_line - 1, 1), f"service/{name}",
                          skip_at=((path, max(service_line - 1, 1)), (path, service_line)))
