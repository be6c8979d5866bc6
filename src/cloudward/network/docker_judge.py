"""Judging one Docker Engine API request: what it is, however its path is spelled, and whether its
body asks the engine for the host.

Two rules keep a deny from being bypassed by spelling:
- the path is judged and forwarded in one canonical form (percent-decoded once, `.`/`..`/`//`
  resolved, API version prefixes stripped for judging), so the engine routes exactly what was
  judged; a path that still holds `%` after decoding, or control bytes, is refused;
- JSON keys are matched the way Go's encoding/json matches struct fields (case-insensitively, with
  Unicode folding: `hostconfig`, `PRIVILEGED`), a judged key given twice in any case is refused,
  and a judged field of an unexpected type is refused rather than guessed at.

Every function here is pure (no I/O but `realpath` when the policy asks for symlink resolution)
and raises only `RequestError`, so the proxy can turn any surprise into a clean 400.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes

from cloudward.engines.podspec import RUNTIME_SOCKETS, covers, host_path
from cloudward.network.docker_policy import HOST_NAMESPACES, Policy, normalise_capability

__all__ = ["BODY_LIMIT", "KNOWN_APIS", "MALFORMED", "UNAUTHENTICATED", "Judge", "RequestError", "Route", "Violation",
           "image_repository", "parse_json", "parse_target"]

# first path segments of the Docker Engine API; anything else (podman's libpod API, BuildKit's raw
# /session and /grpc streams) is not judged here and is refused unless the policy names it
KNOWN_APIS = frozenset({"_ping", "version", "info", "events", "system", "containers", "images", "networks", "volumes",
                        "exec", "build", "commit", "auth", "plugins", "swarm", "services", "tasks", "secrets",
                        "configs", "nodes", "distribution"})
# rule ids (rules/docker-proxy.yaml holds their metadata)
UNAUTHENTICATED = "network.docker_proxy.unauthenticated"
PRIVILEGED = "network.docker_proxy.privileged_container"
HOST_PATH = "network.docker_proxy.host_path_mount"
RUNTIME_SOCKET = "network.docker_proxy.runtime_socket_mount"
HOST_NAMESPACE = "network.docker_proxy.host_namespace"
CAPABILITY = "network.docker_proxy.strong_capability"
UNCONFINED = "network.docker_proxy.unconfined_security_profile"
HOST_DEVICE = "network.docker_proxy.host_device"
EXEC = "network.docker_proxy.exec"
DENIED_IMAGE = "network.docker_proxy.denied_image"
REMOTE_FETCH = "network.docker_proxy.remote_fetch"
PLUGIN = "network.docker_proxy.plugin_install"
SWARM = "network.docker_proxy.swarm_change"
UNJUDGED_API = "network.docker_proxy.unjudged_api"
MALFORMED = "network.docker_proxy.malformed_request"
BODY_LIMIT = "network.docker_proxy.body_limit"

_VERSION = re.compile(r"^v[0-9.]+$")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_PLUGIN_CHANGES = frozenset({"upgrade", "set"})
_SWARM_CHANGES = frozenset({"init", "join", "update", "leave"})
_UNCONFINED_LABELS = ("disable", "type:spc_t", "type:unconfined_t")
_PERMISSIVE_SECCOMP = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"})
# paths every engine masks or makes read-only by default; a container spec that lists its own set
# without them has them exposed
_MASKED = frozenset({"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"})
_READ_ONLY = frozenset({"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"})


class RequestError(ValueError):
    """A request this proxy refuses to judge (and so refuses): the status to answer and the rule."""

    def __init__(self, message: str, status: int = 400, rule_id: str = MALFORMED) -> None:
        super().__init__(message)
        self.status = status
        self.rule_id = rule_id


@dataclass(frozen=True, slots=True)
class Violation:
    rule_id: str
    reason: str
    field: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """A request target after canonicalisation. `segments` are lower-cased and without the API
    version prefix (for judging); `target` is what goes upstream (original case, version kept)."""

    method: str
    path: str
    target: bytes
    segments: tuple[str, ...]
    query: dict[str, list[str]] = field(default_factory=dict)
    kind: str = "other"

    @property
    def hijacks(self) -> bool:
        """Endpoints whose connection the engine takes over for a raw stdin/stdout stream."""
        return self.kind in ("exec_start", "attach")

    @property
    def judges_body(self) -> bool:
        """Endpoints whose (small, JSON) body is read whole before anything goes upstream."""
        return self.kind in _BODY_KINDS


_BODY_KINDS = frozenset({"container_create", "container_start", "exec_create", "exec_start", "volume_create",
                         "service_spec", "plugin_change", "swarm_change"})


def parse_target(method: bytes, target: bytes) -> Route:
    """Canonicalise an origin-form request target (`/v1.41/containers/create?name=x`). Clients repeat
    the same few targets, so short ones' answers are remembered (a Route is never changed); long ones
    are not, so the memory a hostile client can fill stays small."""
    if len(target) <= _CACHED_TARGET_BYTES:
        return _parse_target_cached(method, target)
    return _parse_target(method, target)


_CACHED_TARGET_BYTES = 256


@lru_cache(maxsize=2048)
def _parse_target_cached(method: bytes, target: bytes) -> Route:
    return _parse_target(method, target)


def _parse_target(method: bytes, target: bytes) -> Route:
    try:
        method_text = method.decode("ascii").upper()
    except UnicodeDecodeError:
        raise RequestError("method is not ASCII") from None
    if not target.startswith(b"/"):
        raise RequestError("request target must be a path (origin-form), not an absolute URL or '*'")
    raw_path, _, raw_query = target.partition(b"?")
    if b"#" in target:
        raise RequestError("request target holds a '#' fragment")
    if _BAD_ESCAPE.search(target):
        raise RequestError("request target holds a malformed percent-escape")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
        query_text = raw_query.decode("ascii")
    except UnicodeDecodeError:
        raise RequestError("request path is not UTF-8 after percent-decoding") from None
    if "%" in path:
        raise RequestError("request path is percent-encoded twice")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise RequestError("request path holds control characters")
    segments: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    canonical = "/" + "/".join(segments)
    judged = [s.lower() for s in segments]
    while judged and _VERSION.match(judged[0]):
        judged.pop(0)
    query = parse_qs(query_text, keep_blank_values=True) if query_text else {}
    forward = quote(canonical, safe=_PATH_SAFE).encode("ascii") + (b"?" + raw_query if raw_query else b"")
    return Route(method_text, canonical, forward, tuple(judged), query, _kind(method_text, tuple(judged)))


def _kind(method: str, s: tuple[str, ...]) -> str:
    if s and s[0] not in KNOWN_APIS:
        return "unknown_api"
    n = len(s)
    if n >= 3 and s[0] == "containers" and s[2] == "attach" and (n == 3 or (n == 4 and s[3] == "ws")):
        return "attach"
    if method != "POST":
        return "other"
    match s:
        case ("containers", "create"):
            return "container_create"
        case ("containers", _, "start"):
            return "container_start"
        case ("containers", _, "exec"):
            return "exec_create"
        case ("exec", _, "start"):
            return "exec_start"
        case ("volumes", "create"):
            return "volume_create"
        case ("services", "create") | ("services", _, "update"):
            return "service_spec"
        case ("images", "create"):
            return "image_create"
        case ("build",):
            return "build"
        case ("plugins", "pull") | ("plugins", "create"):
            return "plugin_change"
        case ("plugins", _, change) if change in _PLUGIN_CHANGES:
            return "plugin_change"
        case ("swarm", change) if change in _SWARM_CHANGES:
            return "swarm_change"
    return "other"


# --------------------------------------------------------------------------- JSON, the Go way


class _Object:
    """A JSON object whose judged fields are looked up as Go's encoding/json would find them."""

    __slots__ = ("_folded", "pairs")

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs
        self._folded: dict[str, list[Any]] | None = None

    def get(self, name: str, where: str) -> Any:
        if self._folded is None:
            folded: dict[str, list[Any]] = {}
            for key, value in self.pairs:
                folded.setdefault(key.casefold(), []).append(value)
            self._folded = folded
        values = self._folded.get(name.casefold())
        if not values:
            return None
        if len(values) > 1:
            raise RequestError(f"{where}{name}: given {len(values)} times (keys match in any letter case)")
        return values[0]

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.pairs)


def parse_json(body: bytes, what: str) -> _Object:
    """A JSON object from a request body, or RequestError (never another exception)."""
    try:
        value = json.loads(body.decode("utf-8"), object_pairs_hook=_Object)
    except UnicodeDecodeError:
        raise RequestError(f"{what}: body is not UTF-8") from None
    except RecursionError:
        raise RequestError(f"{what}: body nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise RequestError(f"{what}: body is not valid JSON ({exc})") from None
    if not isinstance(value, _Object):
        raise RequestError(f"{what}: body must be a JSON object, not {type(value).__name__}")
    return value


def _typed(obj: _Object, name: str, where: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name, where)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise RequestError(f"{where}{name}: unexpected JSON type {type(value).__name__}")
    return value


def _strings(obj: _Object, name: str, where: str) -> list[str]:
    value = _typed(obj, name, where, list) or []
    if not all(isinstance(v, str) for v in value):
        raise RequestError(f"{where}{name}: every item must be a string")
    return value


def _objects(obj: _Object, name: str, where: str) -> list[_Object]:
    value = _typed(obj, name, where, list) or []
    if not all(isinstance(v, _Object) for v in value):
        raise RequestError(f"{where}{name}: every item must be an object")
    return value


def image_repository(reference: str) -> str:
    """`alpine` -> `docker.io/library/alpine`; `ghcr.io/a/b:1@sha256:..` -> `ghcr.io/a/b`."""
    name = reference.strip().lower().split("@", 1)[0]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "docker.io", name if sep else f"library/{name}"
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    head, slash, last = path.rpartition("/")
    path = head + slash + last.split(":", 1)[0]
    return f"{host}/{path}"


# --------------------------------------------------------------------------- the judge


class Judge:
    """One policy compiled for judging. `extra_sockets` are engine sockets this proxy knows of (its
    upstream), denied like docker.sock; `local` says bind sources can be resolved on this machine."""

    def __init__(self, policy: Policy, extra_sockets: Iterable[str] = (), *, local: bool = False) -> None:
        self.policy = policy
        self.sockets = sorted({host_path(s) for s in (*RUNTIME_SOCKETS, *extra_sockets)})
        self.denied_paths = list(policy.denied_host_paths)
        self.allowed_paths = [host_path(p) for p in policy.allow_host_paths]
        self.capabilities = {c for c in policy.denied_capabilities if c not in policy.allow_capabilities}
        self.namespaces = {f: n for n, f in HOST_NAMESPACES.items() if n not in policy.allow_host_namespaces}
        self.any_device = "*" in policy.allow_devices
        self.devices = {host_path(d) for d in policy.allow_devices if d != "*"}
        self.resolve = policy.resolve_symlinks == "always" or (policy.resolve_symlinks == "auto" and local)
        self.apis = frozenset(policy.allow_apis)

    def head(self, route: Route) -> list[Violation]:
        """What the method, path and query alone decide (every request)."""
        p = self.policy
        kind = route.kind
        if kind == "unknown_api":
            if route.segments[0] in self.apis:
                return []
            return [Violation(UNJUDGED_API, f"/{route.segments[0]}/ is not a Docker Engine API this "
                              "proxy judges", "path", route.path)]
        if kind in ("exec_create", "exec_start") and not p.allow_exec:
            return [Violation(EXEC, "exec into a container is not allowed by the policy", "path",
                              route.path)]
        if kind == "plugin_change" and not p.allow_plugins:
            return [Violation(PLUGIN, "installing or changing an engine plugin is not allowed",
                              "path", route.path)]
        if kind == "swarm_change" and not p.allow_swarm:
            return [Violation(SWARM, f"swarm {route.segments[-1]} is not allowed", "path",
                              route.path)]
        if kind == "image_create":
            return self._image_create(route.query)
        if kind == "build":
            return self._build(route.query)
        return []

    def body(self, route: Route, body: bytes) -> list[Violation]:
        """What a judged endpoint's body decides (called after `head` found nothing)."""
        kind = route.kind
        if kind == "container_create":
            doc = parse_json(body, "container create")
            found = list(self._host_config(doc, ""))  # podman reads some HostConfig fields at the top too
            host_config = _typed(doc, "HostConfig", "", _Object)
            if host_config is not None:
                found += self._host_config(host_config, "HostConfig.")
            image = _typed(doc, "Image", "", str)
            if image:
                found += self._image(image, "Image")
            return found
        if kind == "container_start":
            if not body.strip():
                return []
            return list(self._host_config(parse_json(body, "container start"), "HostConfig."))  # API < 1.24
        if kind == "exec_create":
            doc = parse_json(body, "exec create")
            if _typed(doc, "Privileged", "", bool) and not self.policy.allow_privileged:
                return [Violation(PRIVILEGED, "privileged exec", "Privileged", "true")]
            return []
        if kind == "volume_create":
            doc = parse_json(body, "volume create") if body.strip() else _Object([])
            options = _typed(doc, "DriverOpts", "", _Object)
            return list(self._volume_options(options, "DriverOpts.")) if options is not None else []
        if kind == "service_spec":
            return list(self._service(parse_json(body, "service spec")))
        return []

    # ----------------------------------------------------------------------- pieces

    def _host_config(self, hc: _Object, where: str) -> Iterator[Violation]:
        p = self.policy
        if _typed(hc, "Privileged", where, bool) and not p.allow_privileged:
            yield Violation(PRIVILEGED, "privileged container", f"{where}Privileged", "true")
        for bind in _strings(hc, "Binds", where):
            source = _bind_source(bind)
            if source is not None:
                yield from self._host_path(source, f"{where}Binds", bind)
        for index, mount in enumerate(_objects(hc, "Mounts", where)):
            yield from self._mount(mount, f"{where}Mounts[{index}].")
        for fieldname in self.namespaces:
            mode = _typed(hc, fieldname, where, str)
            if mode is not None and mode.strip().lower() == "host":
                yield Violation(HOST_NAMESPACE, f"shares the host's {fieldname[:-4].lower()} "
                                "namespace", f"{where}{fieldname}", mode)
        for fieldname in ("CapAdd", "Capabilities"):
            for cap in _strings(hc, fieldname, where):
                if normalise_capability(cap) in self.capabilities:
                    yield Violation(CAPABILITY, f"adds capability {normalise_capability(cap)}",
                                    f"{where}{fieldname}", cap)
        for option in _strings(hc, "SecurityOpt", where):
            reason = _unconfined(option, where)
            if reason and not p.allow_unconfined:
                yield Violation(UNCONFINED, reason, f"{where}SecurityOpt",
                                option[:200])
        if not p.allow_unconfined:
            # `--security-opt systempaths=unconfined` reaches the API as MaskedPaths: [] and ReadonlyPaths: []
            for fieldname, needed in (("MaskedPaths", _MASKED), ("ReadonlyPaths", _READ_ONLY)):
                if hc.get(fieldname, where) is not None:
                    missing = needed - {host_path(v) for v in _strings(hc, fieldname, where)}
                    if missing:
                        yield Violation(UNCONFINED, f"unmasks {', '.join(sorted(missing))}", f"{where}{fieldname}",
                                        json.dumps(_strings(hc, fieldname, where))[:200])
        if not self.any_device:
            for device in _objects(hc, "Devices", where):
                on_host = _typed(device, "PathOnHost", f"{where}Devices[].", str) or ""
                if host_path(on_host) not in self.devices:
                    yield Violation(HOST_DEVICE, f"hands the container host device {on_host}",
                                    f"{where}Devices", on_host)
            for rule in _strings(hc, "DeviceCgroupRules", where):
                yield Violation(HOST_DEVICE, "allows device access by cgroup rule",
                                f"{where}DeviceCgroupRules", rule)

    def _mount(self, mount: _Object, where: str) -> Iterator[Violation]:
        kind = (_typed(mount, "Type", where, str) or "").strip().lower()
        source = _typed(mount, "Source", where, str) or ""
        if kind == "bind" or (not kind and source.startswith("/")):
            yield from self._host_path(source, f"{where}Source", source)
        volume = _typed(mount, "VolumeOptions", where, _Object)
        driver = _typed(volume, "DriverConfig", f"{where}VolumeOptions.", _Object) if volume is not None else None
        options = _typed(driver, "Options", f"{where}VolumeOptions.DriverConfig.", _Object) if driver else None
        if options is not None:
            yield from self._volume_options(options, f"{where}VolumeOptions.DriverConfig.Options.")

    def _volume_options(self, options: _Object, where: str) -> Iterator[Violation]:
        """The local driver's `type=none,o=bind,device=/` makes a named volume a bind of the host's `/`;
        `device=/dev/sda1` mounts a host disk."""
        device = _typed(options, "device", where, str)
        if not device:
            return
        flags = (_typed(options, "o", where, str) or "").lower()
        fstype = (_typed(options, "type", where, str) or "").lower()
        if device.startswith("/") or "bind" in flags or fstype in ("none", "bind"):
            yield from self._host_path(device if device.startswith("/") else f"/{device}", f"{where}device", device)

    def _host_path(self, path: str, where: str, spec: str) -> Iterator[Violation]:
        seen = [host_path(path)]
        if self._allowed(seen[0]):  # the policy names this path: where the host's own links lead is its business
            return
        if self.resolve:
            try:
                real = os.path.realpath(seen[0])
            except (OSError, ValueError):  # unreadable here (/proc/1/root): the spelled path is still judged
                real = seen[0]
            if real != seen[0]:
                seen.append(real)
        for mounted in seen:
            how = "" if mounted == seen[0] else f" (a symbolic link to {mounted})"
            if self._allowed(mounted):
                continue
            if mounted == "/":
                yield Violation(HOST_PATH, f"mounts the host's root filesystem{how}", where, spec)
                return
            socket = next((s for s in self.sockets if covers(mounted, s)), None)
            if socket is not None:
                yield Violation(RUNTIME_SOCKET, f"mounts the container engine's socket "
                                f"{socket}{how}", where, spec)
                return
            denied = next((d for d in self.denied_paths if covers(mounted, d)), None)
            if denied is not None:
                yield Violation(HOST_PATH, f"mounts host path {mounted} (denied: {denied}){how}",
                                where, spec)
                return

    def _allowed(self, mounted: str) -> bool:
        return any(mounted == a or mounted.startswith(a.rstrip("/") + "/") for a in self.allowed_paths)

    def _service(self, doc: _Object) -> Iterator[Violation]:
        template = _typed(doc, "TaskTemplate", "", _Object)
        spec = _typed(template, "ContainerSpec", "TaskTemplate.", _Object) if template is not None else None
        if spec is None:
            return
        where = "TaskTemplate.ContainerSpec."
        for index, mount in enumerate(_objects(spec, "Mounts", where)):
            yield from self._mount(mount, f"{where}Mounts[{index}].")
        for cap in _strings(spec, "CapabilityAdd", where):
            if normalise_capability(cap) in self.capabilities:
                yield Violation(CAPABILITY, f"adds capability {normalise_capability(cap)}",
                                f"{where}CapabilityAdd", cap)
        privileges = _typed(spec, "Privileges", where, _Object)
        if privileges is not None and not self.policy.allow_unconfined:
            yield from _service_privileges(privileges, f"{where}Privileges.")
        image = _typed(spec, "Image", where, str)
        if image:
            yield from self._image(image, f"{where}Image")

    def _image(self, reference: str, where: str) -> list[Violation]:
        repository = image_repository(reference)
        p = self.policy
        denied = next((r for r in p.denied_registries if _under(repository, r)), None)
        if denied is not None:
            return [Violation(DENIED_IMAGE, f"image {repository} is from denied {denied}", where,
                              reference)]
        if p.allowed_registries and not any(_under(repository, r) for r in p.allowed_registries):
            return [Violation(DENIED_IMAGE, f"image {repository} is not from an allowed registry",
                              where, reference)]
        return []

    def _image_create(self, query: dict[str, list[str]]) -> list[Violation]:
        found: list[Violation] = []
        for name in query.get("fromImage", []):
            if name:
                found += self._image(name, "fromImage")
        for source in query.get("fromSrc", []):
            if source not in ("", "-") and not self.policy.allow_remote_fetch:
                found.append(Violation(REMOTE_FETCH, "image import from a URL the engine would "
                                       "download", "fromSrc", source[:200]))
        return found

    def _build(self, query: dict[str, list[str]]) -> list[Violation]:
        found = []
        for remote in query.get("remote", []):
            if remote and not self.policy.allow_remote_fetch:
                found.append(Violation(REMOTE_FETCH, "build from a remote context the engine would "
                                       "download", "remote", remote[:200]))
        for mode in query.get("networkmode", []):
            if mode.strip().lower() == "host" and "NetworkMode" in self.namespaces:
                found.append(Violation(HOST_NAMESPACE, "build steps share the host's network "
                                       "namespace", "networkmode", mode))
        return found


def _under(repository: str, prefix: str) -> bool:
    return repository == prefix or repository.startswith(prefix + "/")


def _bind_source(spec: str) -> str | None:
    """The host side of a `Binds` entry (`src:dst[:opts]`), or None for a named or anonymous volume."""
    parts = spec.split(":")
    if len(parts) >= 2 and parts[0].startswith("/"):
        return parts[0]
    return None


def _unconfined(option: str, where: str) -> str | None:
    key, sep, value = option.partition("=")
    if not sep:
        key, _, value = option.partition(":")
    key, value = key.strip().lower(), value.strip()
    lowered = value.lower()
    if key in ("apparmor", "seccomp", "systempaths") and lowered == "unconfined":
        return f"{key} unconfined"
    if key == "label" and lowered in _UNCONFINED_LABELS:
        return f"SELinux label {lowered}"
    if key == "seccomp" and value.startswith("{"):
        profile = parse_json(value.encode(), f"{where}SecurityOpt seccomp profile")
        action = profile.get("defaultAction", "seccomp profile ")
        if isinstance(action, str) and action.upper() in _PERMISSIVE_SECCOMP:
            return f"seccomp profile allows every system call by default ({action})"
    return None


def _service_privileges(privileges: _Object, where: str) -> Iterator[Violation]:
    selinux = _typed(privileges, "SELinuxContext", where, _Object)
    if selinux is not None and _typed(selinux, "Disable", f"{where}SELinuxContext.", bool):
        yield Violation(UNCONFINED, "SELinux labelling disabled",
                        f"{where}SELinuxContext.Disable", "true")
    for name, off in (("AppArmor", "disabled"), ("Seccomp", "unconfined")):
        section = _typed(privileges, name, where, _Object)
        mode = _typed(section, "Mode", f"{where}{name}.", str) if section is not None else None
        if mode is not None and mode.strip().lower() == off:
            yield Violation(UNCONFINED, f"{name} {off}", f"{where}{name}.Mode", mode)
