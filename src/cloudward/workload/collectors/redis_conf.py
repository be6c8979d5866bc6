"""Redis configuration: listening addresses, protected mode, password or ACL users, renamed dangerous commands.

Why: an unauthenticated Redis reachable from the network is one of TeamTNT's front doors — with
`CONFIG SET dir /root/.ssh` + `CONFIG SET dbfilename authorized_keys` + `SAVE` (or a cron
directory) a client writes a file as the redis user, and `SLAVEOF`/`REPLICAOF` + `MODULE LOAD`
runs code. The exposure scanner sees this from outside; this collector reads the configuration
that makes it so. Each instance's main file (/etc/redis/redis.conf, /etc/redis.conf,
/etc/redis/*.conf, /etc/redis-*.conf, /etc/redis/*/redis.conf …) becomes one `redis_config`
observation; `include` lines are followed in place (globs, bounded depth, loops refused), the
ACL file named by `aclfile` is read for its `user default …` line, and, as Redis does, the last
value of a directive wins. Sentinel configurations are skipped. Passwords are never reported, only
whether one is set, its length and whether it is a well-known example value.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cloudward.workload.observation import HostContext, HostObservation

__all__ = ["DANGEROUS", "RedisConfig", "collect", "parse_redis_config"]

CANDIDATE_FILES = ("/etc/redis/redis.conf", "/etc/redis.conf", "/usr/local/etc/redis.conf",
                   "/usr/local/etc/redis/redis.conf", "/etc/redis/redis-server.conf")
CANDIDATE_DIRS = (("/etc/redis", ".conf"), ("/etc", ".conf"))  # /etc: only redis-*.conf / redis_*.conf
MAX_DEPTH = 8
MAX_FILES = 64
MAX_FILE_BYTES = 2 * 1024 * 1024
DANGEROUS = ("CONFIG", "FLUSHALL", "FLUSHDB", "DEBUG", "MODULE", "SLAVEOF", "REPLICAOF", "EVAL", "KEYS")
# The subset whose exposure gives file writes or code execution (the TeamTNT takeover path).
TAKEOVER = ("CONFIG", "DEBUG", "MODULE", "SLAVEOF", "REPLICAOF")
EXAMPLE_PASSWORDS = frozenset({"foobared", "redis", "password", "123456", "changeme", "secret", "admin", "root"})
_ALL_ADDRESSES = frozenset({"0.0.0.0", "*", "::", "::*", "[::]"})  # noqa: S104 - values compared, not bound


@dataclass
class RedisConfig:
    path: str
    directives: dict[str, tuple[list[str], str]] = field(default_factory=dict)  # name -> (args, file:line)
    renames: dict[str, tuple[str, str]] = field(default_factory=dict)  # COMMAND -> (new name, file:line)
    users: dict[str, tuple[list[str], str]] = field(default_factory=dict)  # user -> (rules, file:line)
    files: list[str] = field(default_factory=list)
    sentinel: bool = False


def _tokens(line: str) -> list[str]:
    """Redis's own splitting: quotes group, `#` is a comment only at the start of a line."""
    if line.startswith("#"):
        return []
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError:
        return line.split()


class _Reader:
    def __init__(self, ctx: HostContext, config: RedisConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.stack: list[str] = []

    def expand(self, pattern: str, base_dir: str) -> list[str]:
        if not pattern.startswith("/"):
            pattern = f"{base_dir}/{pattern}"
        directory, _, name = pattern.rpartition("/")
        if not any(c in name for c in "*?["):
            return [pattern]
        try:
            names = self.ctx.root.listdir(directory or "/")
        except OSError:
            return []
        return [f"{directory}/{n}" for n in names if fnmatch.fnmatchcase(n, name)][:MAX_FILES]

    def read(self, path: str, depth: int) -> bool:
        if path in self.stack:
            self.ctx.error(path, f"redis include loop ({' -> '.join([*self.stack, path])}); not followed")
            return False
        if depth > MAX_DEPTH or len(self.config.files) >= MAX_FILES:
            self.ctx.error(path, f"redis includes nested deeper than {MAX_DEPTH} or more than {MAX_FILES} files; "
                           "not read")
            return False
        try:
            data = self.ctx.root.read_bytes(path, MAX_FILE_BYTES)
        except FileNotFoundError:
            if depth:
                self.ctx.error(path, "file named by a redis `include` is missing")
            return False
        except OSError as exc:
            self.ctx.error(path, f"cannot read redis configuration: {exc.strerror or exc}")
            return False
        if b"\x00" in data:
            self.ctx.error(path, "binary content where a redis configuration was expected; not parsed")
            return False
        self.config.files.append(path)
        self.stack.append(path)
        try:
            for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
                words = _tokens(raw.strip())
                if not words:
                    continue
                name, args = words[0].lower(), words[1:]
                where = f"{path}:{number}"
                if name == "include":
                    for pattern in args:
                        for included in self.expand(pattern, path.rpartition("/")[0] or "/"):
                            self.read(included, depth + 1)
                elif name == "rename-command" and args:
                    self.config.renames[args[0].upper()] = (args[1] if len(args) > 1 else "", where)
                elif name == "user" and args:
                    self.config.users[args[0]] = (args[1:], where)
                elif name.startswith("sentinel"):
                    self.config.sentinel = True
                else:
                    self.config.directives[name] = (args, where)  # Redis: the last value wins
        finally:
            self.stack.pop()
        return True


def _read_aclfile(ctx: HostContext, config: RedisConfig, path: str) -> bool | None:
    """Users from an ACL file; True if read, None if it could not be (reported)."""
    try:
        text = ctx.root.read_text(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        ctx.error(path, f"cannot read redis ACL file: {exc.strerror or exc}")
        return None
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split()
        if len(words) >= 2 and words[0].lower() == "user":
            config.users[words[1]] = (words[2:], f"{path}:{number}")
    return True


def parse_redis_config(ctx: HostContext, path: str) -> RedisConfig | None:
    config = RedisConfig(path)
    if not _Reader(ctx, config).read(path, 0):
        return None
    return config


def _address_class(address: str) -> str:
    bare = address.lstrip("-").strip("[]")
    if bare in _ALL_ADDRESSES or address.lstrip("-") in _ALL_ADDRESSES:
        return "all"
    if bare.lower() == "localhost":
        return "loopback"
    try:
        ip = ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return "other"  # a host name: treat as reachable beyond loopback
    return "loopback" if ip.is_loopback else "other"


def _facts(ctx: HostContext, config: RedisConfig) -> dict[str, Any]:
    def value(name: str, default: str = "") -> str:
        entry = config.directives.get(name)
        return " ".join(entry[0]) if entry else default

    sources = {name: where for name, (_, where) in config.directives.items()
               if name in ("bind", "protected-mode", "requirepass", "aclfile", "port", "tls-port", "masterauth",
                           "enable-debug-command", "enable-module-command", "enable-protected-configs")}
    bind_entry = config.directives.get("bind")
    bind = list(bind_entry[0]) if bind_entry else []
    classes = {_address_class(a) for a in bind} if bind else {"all"}  # no bind line: every interface
    port_text = value("port", "6379")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    tls_port_text = value("tls-port", "0")
    tcp_enabled = port != 0 or tls_port_text not in ("", "0")
    listens_all = tcp_enabled and "all" in classes
    exposed = tcp_enabled and bool(classes - {"loopback"})

    password = value("requirepass")
    aclfile = value("aclfile")
    acl_read = _read_aclfile(ctx, config, aclfile) if aclfile else None
    default_rules = config.users.get("default", ([], ""))[0]
    lowered = [r.lower() for r in default_rules]
    default_user_line = "default" in config.users
    if default_user_line:
        # ACL rules apply left to right; the last of on/off and of nopass/resetpass/>pw wins.
        state_on = True
        nopass = False
        for rule in lowered:
            if rule == "on":
                state_on = True
            elif rule == "off":
                state_on = False
            elif rule == "nopass":
                nopass = True
            elif rule == "resetpass" or rule.startswith((">", "#")):
                nopass = False  # a password now (or none at all: nobody can log in)
        default_open = state_on and nopass
    else:
        default_open = not password and not (aclfile and acl_read is None)
    restricted = [r for r in lowered if r.startswith("-") or r in ("resetchannels",)]
    renamed = {cmd: new for cmd, (new, _) in config.renames.items()}
    acl_denied = {r[1:].upper() for r in lowered if r.startswith("-") and not r.startswith("-@")}
    acl_dangerous_denied = any(r in ("-@dangerous", "-@all", "-@admin") for r in lowered)
    enabled = [c for c in DANGEROUS if c not in renamed and c not in acl_denied and not acl_dangerous_denied]
    takeover = [c for c in TAKEOVER if c in enabled]
    return {
        "bind": bind,
        "bind_explicit": bind_entry is not None,
        "port": port,
        "tls_port": tls_port_text,
        "tcp_enabled": tcp_enabled,
        "listens_all_interfaces": listens_all,
        "listens_beyond_loopback": exposed,
        "protected_mode": value("protected-mode", "yes").lower(),
        "requirepass_set": bool(password),
        "requirepass_length": len(password),
        "requirepass_is_example": password.lower() in EXAMPLE_PASSWORDS,
        "aclfile": aclfile or None,
        "aclfile_read": acl_read is True,
        "default_user_rules": [r for r in default_rules if not r.startswith((">", "#", "<", "!"))],
        "default_user_nopass": default_open,
        "authentication_required": not default_open,
        "users": sorted(config.users),
        "renamed_commands": {c: ("(disabled)" if not n else "(renamed)") for c, n in renamed.items()},
        "dangerous_commands_enabled": enabled,
        "takeover_commands_enabled": takeover,
        "acl_restrictions": restricted,
        "enable_debug_command": value("enable-debug-command", "no").lower(),
        "enable_module_command": value("enable-module-command", "no").lower(),
        "dir": value("dir"),
        "dbfilename": value("dbfilename", "dump.rdb"),
        "files": list(config.files),
        "sources": sources,
    }


def _candidates(ctx: HostContext) -> list[str]:
    found: list[str] = []
    for path in CANDIDATE_FILES:
        if ctx.root.is_file(path) and path not in found:
            found.append(path)
    for directory, suffix in CANDIDATE_DIRS:
        for path in ctx.root.glob(directory, suffix):
            name = path.rsplit("/", 1)[1]
            if directory == "/etc" and not name.startswith(("redis-", "redis_")):
                continue
            if "sentinel" in name or path in found:
                continue
            found.append(path)
    for directory in ctx.root.glob("/etc/redis"):  # /etc/redis/<instance>/redis.conf
        nested = f"{directory}/redis.conf"
        if ctx.root.is_dir(directory) and ctx.root.is_file(nested) and nested not in found:
            found.append(nested)
    return found[:MAX_FILES]


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    candidates = _candidates(ctx)
    configs: list[RedisConfig] = []
    included: set[str] = set()
    for path in candidates:
        config = parse_redis_config(ctx, path)
        if config is None:
            continue
        configs.append(config)
        included.update(config.files[1:])
    # An instance is a file nobody else includes; files that only include each other (a loop) are
    # taken in candidate order, each one's includes then no longer counting as instances.
    instances = [c for c in configs if c.path not in included]
    covered = {f for c in instances for f in c.files}
    for config in configs:
        if config.path not in covered:
            instances.append(config)
            covered.update(config.files)
    for config in sorted(instances, key=configs.index):
        if config.sentinel:
            continue
        try:
            facts = _facts(ctx, config)
        except Exception as exc:  # one odd file must not cost the other instances
            ctx.error(config.path, f"cannot interpret redis configuration: {type(exc).__name__}: {exc}")
            continue
        yield HostObservation("redis_config", facts, path=config.path, key=config.path)
