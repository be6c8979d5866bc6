"""What `network protect docker` lets through: who may call the Docker API, and which dangerous
requests a site has decided to allow anyway.

A policy is a YAML (or TOML) file read at start and again on SIGHUP. It holds only the SHA-256 of
each token, never a token. A file that cannot be read or does not validate stops the start, and on
a reload leaves the policy in force untouched: the proxy never runs on a policy it did not
understand. With no file at all the defaults below apply, which deny everything TeamTNT-style
takeovers use; a site relaxes them one named knob at a time.

An example (every key optional but `tokens`, or pass `--token-file`):

    tokens:                        # `cloudward network protect docker --hash-token` prints an entry
      - {name: ci, sha256: <the 64 hex digits of the token's SHA-256>}
    allow_exec: false              # /containers/{id}/exec and /exec/{id}/start
    allow_privileged: false        # Privileged: true (containers and execs)
    allow_host_namespaces: []      # pid, network, ipc, uts, userns, cgroupns
    allow_capabilities: []         # taken off denied_capabilities
    allow_devices: []              # host device paths, or "*"
    allow_host_paths: [/etc/localtime, /etc/timezone]   # the path itself or below it
    denied_host_paths: [...]       # replaces the default list (DEFAULT_DENIED_HOST_PATHS)
    denied_registries: [evil.example, docker.io/someone]
    allowed_registries: []         # when set, images only from these
    allow_unconfined: false        # seccomp/apparmor unconfined, label=disable, systempaths=unconfined
    allow_remote_fetch: false      # /build?remote=URL, /images/create?fromSrc=URL
    allow_plugins: false           # /plugins/pull, /create, /{name}/upgrade, /{name}/set
    allow_swarm: false             # /swarm/init, /join, /update, /leave
    allow_apis: []                 # e.g. [libpod]: that API then passes unjudged
    max_body_bytes: 1048576        # judged JSON bodies; longer ones get 413
    request_timeout: 30            # seconds for a request head or a judged body
    idle_timeout: 300              # seconds a kept-alive connection may idle

The docker CLI sends the token when its config (`~/.docker/config.json`, or `$DOCKER_CONFIG`)
holds `{"HttpHeaders": {"Authorization": "Bearer <token>"}}`; use TLS (`--tls-cert`) whenever the
proxy is reached from beyond the host.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloudward.engines.podspec import RUNTIME_SOCKETS

__all__ = ["DEFAULT_DENIED_CAPABILITIES", "DEFAULT_DENIED_HOST_PATHS", "HOST_NAMESPACES", "MAX_POLICY_BYTES",
           "Policy", "PolicyError", "TokenEntry", "Tokens", "hash_token", "load_policy", "normalise_capability"]

MAX_POLICY_BYTES = 1024 * 1024
# A trailing "/**" also denies everything below the path; without it, the path itself and every
# directory above it (mounting /var/run hands over /var/run/docker.sock).
DEFAULT_DENIED_HOST_PATHS = [
    "/", "/etc/**", "/root/**", "/boot/**", "/usr/**", "/bin/**", "/sbin/**", "/lib/**", "/lib64/**",
    "/proc/**", "/sys/**", "/dev/**", "/var/lib/docker/**", "/var/lib/containers/**", "/var/lib/containerd/**",
    "/var/lib/kubelet/**", "/run/docker/**", "/var/run/docker/**", "/run/containerd/**", "/var/run/containerd/**",
    "/run/podman/**", "/var/run/podman/**", "/run/crio/**", "/var/run/crio/**", "/run/user/**",
    *RUNTIME_SOCKETS,
]
DEFAULT_ALLOWED_HOST_PATHS = ["/etc/localtime", "/etc/timezone"]
DEFAULT_DENIED_CAPABILITIES = ["ALL", "SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "SYS_RAWIO", "SYS_BOOT", "NET_ADMIN",
                               "DAC_READ_SEARCH", "BPF", "PERFMON", "MAC_ADMIN", "MAC_OVERRIDE", "SYSLOG"]
# policy name -> the HostConfig field that puts a container in the host's namespace with "host"
HOST_NAMESPACES = {"pid": "PidMode", "network": "NetworkMode", "ipc": "IpcMode", "uts": "UTSMode",
                   "userns": "UsernsMode", "cgroupns": "CgroupnsMode"}
HostNamespace = Literal["pid", "network", "ipc", "uts", "userns", "cgroupns"]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SEGMENT = re.compile(r"^[a-z0-9_.-]+$")


class PolicyError(ValueError):
    """The policy cannot be used; the message names the file and the field."""


def hash_token(token: str | bytes) -> str:
    """The value a policy stores for a token: its SHA-256 in hex (tokens are random, so unsalted is enough)."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()


def normalise_capability(name: str) -> str:
    """`cap_sys_admin`, `CAP_SYS_ADMIN` and `sys_admin` are one capability to the engine."""
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


def _absolute(paths: list[str], field: str) -> list[str]:
    for path in paths:
        bare = path[:-3] if path.endswith("/**") else path
        if not bare.startswith("/") and bare != "":
            raise ValueError(f"{field}: {path!r} is not an absolute path")
    return paths


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower().removeprefix("sha256:")
        if not _HEX64.match(value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256 (see --hash-token)")
        return value


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[TokenEntry] = Field(default_factory=list)
    # judged JSON bodies are read up to this many bytes (a longer one is refused with 413)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # seconds a client may take to send a request head, or a judged body
    request_timeout: float = Field(30.0, gt=0, le=3600)
    # seconds a kept-alive connection may stay idle between requests
    idle_timeout: float = Field(300.0, gt=0, le=86400)
    allow_exec: bool = False
    allow_privileged: bool = False
    allow_host_namespaces: list[HostNamespace] = Field(default_factory=list)
    allow_capabilities: list[str] = Field(default_factory=list)
    allow_devices: list[str] = Field(default_factory=list)  # host device paths, or "*" for any device and rule
    allow_host_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_HOST_PATHS))
    allow_unconfined: bool = False  # seccomp/apparmor/SELinux label/systempaths unconfined
    allow_remote_fetch: bool = False  # /build?remote=URL, /images/create?fromSrc=URL: the daemon downloads
    allow_plugins: bool = False
    allow_swarm: bool = False
    allow_apis: list[str] = Field(default_factory=list)  # first path segments passed unjudged (e.g. libpod)
    denied_host_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_HOST_PATHS))
    denied_capabilities: list[str] = Field(default_factory=lambda: list(DEFAULT_DENIED_CAPABILITIES))
    denied_registries: list[str] = Field(default_factory=list)  # host[/path] prefixes of refused images
    allowed_registries: list[str] = Field(default_factory=list)  # when set, only images from these
    # judge bind sources also after resolving symbolic links on this machine: "auto" when the
    # engine is local (a unix socket or a loopback address)
    resolve_symlinks: Literal["auto", "always", "never"] = "auto"

    @field_validator("denied_host_paths", "allow_host_paths", "allow_devices")
    @classmethod
    def _paths(cls, value: list[str], info: object) -> list[str]:
        field = getattr(info, "field_name", "paths")
        return _absolute([v for v in value if v != "*"], field) + [v for v in value if v == "*"]

    @field_validator("allow_capabilities", "denied_capabilities")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        return [normalise_capability(v) for v in value]

    @field_validator("denied_registries", "allowed_registries")
    @classmethod
    def _registries(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            entry = entry.strip().lower().rstrip("/")
            if not entry or "://" in entry:
                raise ValueError(f"{entry!r}: give a registry host with an optional path, e.g. docker.io/library")
            out.append("docker.io" + entry[len("index.docker.io"):] if entry.startswith("index.docker.io") else entry)
        return out

    @field_validator("allow_apis")
    @classmethod
    def _apis(cls, value: list[str]) -> list[str]:
        out = [v.strip().strip("/").lower() for v in value]
        bad = [v for v in out if not _SEGMENT.match(v)]
        if bad:
            raise ValueError(f"not a single path segment: {', '.join(bad)}")
        return out


@dataclass(frozen=True, slots=True)
class Tokens:
    """The accepted tokens as (name, SHA-256 digest); a presented token is hashed and compared with
    every entry in constant time, so neither its value nor which entry it is close to leaks."""

    entries: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, policy: Policy) -> Tokens:
        return cls(tuple((t.name, bytes.fromhex(t.sha256)) for t in policy.tokens))

    def identify(self, presented: bytes) -> str | None:
        digest = hashlib.sha256(presented).digest()
        found = None
        for name, expected in self.entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = name
        return found


def _read(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: {what} too large ({size} bytes)")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def load_policy(path: Path | None = None, token_file: Path | None = None) -> Policy:
    """The policy in `path` (defaults without one), plus the token held in `token_file` (hashed here,
    under the name `token-file`). Raises PolicyError naming the file; no tokens at all is an error,
    since every request would be refused."""
    data: object = {}
    if path is not None:
        text = _read(path, "policy")
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PolicyError(f"{path}: a policy is a mapping, not {type(data).__name__}")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"{path or 'policy'}: {problems}") from None
    if token_file is not None:
        token = _read(token_file, "token file").strip()
        if len(token) < 16:
            raise PolicyError(f"{token_file}: the token must be at least 16 characters")
        policy = policy.model_copy(update={"tokens": [*policy.tokens, TokenEntry(name="token-file",
                                                                                sha256=hash_token(token))]})
    if not policy.tokens:
        raise PolicyError(f"{path or 'policy'}: no tokens: every request would be refused (add `tokens:` "
                          "entries with --hash-token, or pass --token-file)")
    return policy
