"""What `network protect redis` refuses: the built-in rules (`rules/redis-proxy.yaml`) and a site's
policy file, compiled into the few lookups the proxy makes per command.

The rules are data: each names the commands it inspects and its default action. A policy file
(YAML) changes an action per rule (block, alert, off), adds a deny list, an allow list and renamed
commands, sets the limits of the request parser and can require AUTH at the proxy, holding only
the SHA-256 of the password (the same form as a Redis ACL `#<hash>` password), never the password.
A file that cannot be read or does not validate stops the start, and on a reload leaves the policy
in force untouched: the proxy never runs on a policy it did not understand.

The judgement is split so that most commands cost one set lookup: only names some rule, list or
AUTH handling cares about (`CompiledPolicy.special`) are looked at further.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloudward.core.rules import Rule, packaged_engine_rules
from cloudward.network.redis_shared import SHAREABLE
from cloudward.network.resp import Limits

__all__ = ["MAX_POLICY_BYTES", "RULES_FILE", "CompiledPolicy", "PolicyError", "RedisPolicy", "Verdict",
           "builtin_rules", "hash_password", "load_policy", "validate_rule"]

RULES_FILE = "redis-proxy.yaml"
MAX_POLICY_BYTES = 1024 * 1024
Action = Literal["block", "alert", "off"]
EVENTS = ("unauthenticated", "auth_failed", "protocol_violation", "denied", "not_allowed")
KINDS = ("command", "config_set", "script", "event")
# Commands whose arguments carry Lua: (name, subcommand or None) -> where the code is.
SCRIPT_COMMANDS = {b"eval", b"eval_ro", b"script", b"function"}
# Connection-level commands an allow list never needs to name.
ALWAYS_ALLOWED = frozenset({b"auth", b"hello", b"quit", b"reset"})
_PLAIN_MEMO_MAX = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9_|.-]{1,64}$")


class PolicyError(ValueError):
    """The policy cannot be used; the message names the file and the field."""


def hash_password(password: str | bytes) -> str:
    """What a policy stores for the proxy's password: SHA-256 in hex, as Redis ACL `#<hash>` does."""
    return hashlib.sha256(password.encode() if isinstance(password, str) else password).hexdigest()


# --- rules ---------------------------------------------------------------------------------------


def _names(value: Any, field_name: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and _NAME.match(v) for v in value):
        raise ValueError(f"match.{field_name} must be a non-empty list of lower-case names")
    return value


def validate_rule(rule: Rule) -> None:
    """Check a `redis_proxy` rule's match block (raises ValueError naming the problem)."""
    match = rule.match
    kind = match.get("kind")
    if kind not in KINDS:
        raise ValueError(f"match.kind must be one of {', '.join(KINDS)}")
    allowed = {"engine", "kind", "action"} | {
        "command": {"commands", "subcommands"}, "config_set": {"parameters"},
        "script": {"patterns", "dynamic_commands"}, "event": {"event"}}[kind]
    unknown = set(match) - allowed
    if unknown:
        raise ValueError(f"match: unknown keys for kind {kind}: {', '.join(sorted(unknown))}")
    if kind == "event":
        if match.get("event") not in EVENTS:
            raise ValueError(f"match.event must be one of {', '.join(EVENTS)}")
        if "action" in match:
            raise ValueError("match.action: events are always enforced")
        return
    if match.get("action") not in ("block", "alert"):
        raise ValueError("match.action must be block or alert")
    if kind == "command":
        _names(match.get("commands"), "commands")
        if "subcommands" in match:
            _names(match["subcommands"], "subcommands")
    elif kind == "config_set":
        _names(match.get("parameters"), "parameters")
    else:
        patterns = match.get("patterns")
        if not isinstance(patterns, list) or not patterns:
            raise ValueError("match.patterns must be a non-empty list of regular expressions")
        for pattern in patterns:
            try:
                re.compile(str(pattern).encode())
            except re.error as exc:
                raise ValueError(f"match.patterns: {pattern!r}: {exc}") from None
        if "dynamic_commands" in match:
            _names(match["dynamic_commands"], "dynamic_commands")


@cache
def builtin_rules() -> tuple[Rule, ...]:
    """The proxy's rules, from this package's `rules/redis-proxy.yaml` only (the folder is shared
    with other network rule files)."""
    return packaged_engine_rules("cloudward.network", RULES_FILE, "redis_proxy", validate_rule)


# --- the policy file -----------------------------------------------------------------------------


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field("default", min_length=1, max_length=128)
    password_sha256: str
    # Also send the client's AUTH on to the server (which then must have the same password).
    forward: bool = False

    @field_validator("password_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower().removeprefix("#")
        if not _HEX64.match(value):
            raise ValueError("must be 64 hex digits: the SHA-256 of the password "
                             "(`cloudward network protect redis --hash-password`), never the password")
        return value


_DEFAULT_LIMITS = Limits()


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bulk_bytes: int = Field(_DEFAULT_LIMITS.max_bulk, ge=1, le=512 * 1024 * 1024)
    max_array_items: int = Field(_DEFAULT_LIMITS.max_array, ge=1, le=2**31 - 1)
    max_inline_bytes: int = Field(_DEFAULT_LIMITS.max_inline, ge=16, le=1024 * 1024)
    max_request_bytes: int = Field(_DEFAULT_LIMITS.max_request, ge=1, le=4 * 1024 * 1024 * 1024)
    max_connections: int = Field(10_000, ge=1, le=1_000_000)


def _command_list(value: list[str], field_name: str) -> list[str]:
    names = [v.strip().lower() for v in value]
    bad = [v for v in names if not _NAME.match(v)]
    if bad:
        raise ValueError(f"not command names: {', '.join(map(repr, bad))}")
    return names


class RedisPolicy(BaseModel):
    """The policy file's shape (YAML; every key optional), e.g.:

        rules:                                  # per built-in rule id: block | alert | off
          network.redis_proxy.config_set_security_setting: block
        deny_commands: [flushall, flushdb, keys]
        allow_commands: []                      # if set, only these pass (AUTH/HELLO/QUIT/RESET always)
        rename_commands: {config: config-8c1f}  # clients use the new name; the old one is "unknown"
        require_auth:
          password_sha256: <`cloudward network protect redis --hash-password`>
          username: default
          forward: false                        # also send AUTH on (a server with the same password)
        limits: {max_bulk_bytes: 67108864, max_array_items: 1048576, max_inline_bytes: 65536,
                 max_request_bytes: 134217728, max_connections: 10000}
        upstream_connect_timeout: 5
        shared_connections: 2                   # 0: a server connection per client from the start
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: dict[str, Action] = Field(default_factory=dict)
    deny_commands: list[str] = Field(default_factory=list)
    allow_commands: list[str] = Field(default_factory=list)
    rename_commands: dict[str, str] = Field(default_factory=dict)
    require_auth: AuthSettings | None = None
    limits: LimitSettings = Field(default_factory=lambda: LimitSettings.model_validate({}))
    upstream_connect_timeout: float = Field(5.0, gt=0, le=120)
    # Server connections shared by clients while they send only keyspace commands (redis_shared.py);
    # 0 gives every client a connection of its own from the start.
    shared_connections: int = Field(2, ge=0, le=64)

    @field_validator("rules", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        """YAML reads an unquoted `off` as false: take it as the action it was meant to be."""
        if isinstance(value, dict):
            return {k: "off" if v is False else v for k, v in value.items()}
        return value

    @field_validator("deny_commands", "allow_commands")
    @classmethod
    def _lists(cls, value: list[str]) -> list[str]:
        return _command_list(value, "commands")

    @field_validator("rename_commands")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        out = dict(zip(_command_list(list(value), "rename_commands"),
                       _command_list(list(value.values()), "rename_commands"), strict=True))
        if len(set(out.values())) != len(out) or set(out) & set(out.values()):
            raise ValueError("new names must be distinct and differ from every renamed command")
        return out

    def compile(self) -> CompiledPolicy:
        return compile_policy(self)


def load_policy(path: str | Path | None) -> CompiledPolicy:
    """The policy in `path` (None: the built-in defaults), compiled. PolicyError names the file."""
    if path is None:
        return RedisPolicy.model_validate({}).compile()
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: policy file too large ({size} bytes)")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the policy must be a mapping, got {type(data).__name__}")
    try:
        policy = RedisPolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"{path}: {problems}") from None
    try:
        return policy.compile()
    except ValueError as exc:
        raise PolicyError(f"{path}: {exc}") from None


# --- compiled form -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's judgement of one command: `block` refuses it, `alert` forwards it; both report."""

    rule: Rule
    action: str
    detail: str  # what matched, e.g. "config|set dir", fit for a log line and the RESP error


@dataclass(frozen=True, slots=True)
class _Matcher:
    rule: Rule
    action: str
    kind: str
    subcommands: frozenset[bytes] = frozenset()
    parameters: frozenset[bytes] = frozenset()
    patterns: tuple[re.Pattern[bytes], ...] = ()
    dynamic: frozenset[bytes] = frozenset()

    def judge(self, name: bytes, args: list[bytes]) -> Verdict | None:
        if self.kind == "command":
            if not self.subcommands:
                return Verdict(self.rule, self.action, _text(name))
            if len(args) > 1 and args[1].lower() in self.subcommands:
                return Verdict(self.rule, self.action, f"{_text(name)}|{_text(args[1].lower())}")
            return None
        if self.kind == "config_set":
            if len(args) < 3 or args[1].lower() != b"set":
                return None
            hits = [p.lower() for p in args[2::2] if p.lower() in self.parameters]
            if hits:
                return Verdict(self.rule, self.action, "config|set " + " ".join(_text(h) for h in hits))
            return None
        return self._judge_script(name, args)

    def _judge_script(self, name: bytes, args: list[bytes]) -> Verdict | None:
        code, extra = _script_parts(name, args)
        if code is None:
            return None
        for pattern in self.patterns:
            found = pattern.search(code)
            if found:
                return Verdict(self.rule, self.action, f"{_label(name, args)} script matches {_text(found.group(0))!r}")
        if self.dynamic and _DYNAMIC_CALL.search(code):
            named = [a.lower() for a in extra if a.lower() in self.dynamic]
            if named:
                return Verdict(self.rule, self.action,
                               f"{_label(name, args)} script calls a computed command, argument {_text(named[0])!r}")
        return None


# redis.call / redis.pcall whose first argument is not a string literal
_DYNAMIC_CALL = re.compile(rb"redis\s*\.\s*p?call\s*\(\s*[^'\"\s)]")


def _script_parts(name: bytes, args: list[bytes]) -> tuple[bytes | None, list[bytes]]:
    """The Lua code a script command carries and the arguments it is run with."""
    if name in (b"eval", b"eval_ro"):
        return (args[1], args[2:]) if len(args) > 1 else (None, [])
    sub = args[1].lower() if len(args) > 1 else b""
    if name == b"script" and sub == b"load" and len(args) > 2:
        return args[2], []
    if name == b"function" and sub in (b"load", b"restore") and len(args) > 2:
        return (args[-1] if sub == b"load" else args[2]), []
    return None, []


def _label(name: bytes, args: list[bytes]) -> str:
    if name in (b"script", b"function") and len(args) > 1:
        return f"{_text(name)}|{_text(args[1].lower())}"
    return _text(name)


def _text(value: bytes, limit: int = 64) -> str:
    text = value[:limit].decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text) + ("..." if len(value) > limit else "")


@dataclass(frozen=True)
class CompiledPolicy:
    """The policy as the proxy uses it. Immutable: a reload builds a new one and swaps it in."""

    source: RedisPolicy
    limits: Limits
    inspect: dict[bytes, tuple[_Matcher, ...]]
    deny: frozenset[bytes]
    allow: frozenset[bytes] | None
    renames: dict[bytes, bytes]  # new name -> real command
    hidden: frozenset[bytes]  # real names of renamed commands (refused under their own name)
    auth: AuthSettings | None
    events: dict[str, Rule]
    actions: dict[str, str] = field(default_factory=dict)  # rule id -> effective action
    # names that need more than forwarding: everything above, looked up once per command
    special: frozenset[bytes] = frozenset()
    # command names as clients spelled them that were found to need nothing but forwarding
    plain: set[bytes] = field(default_factory=set, compare=False, repr=False)
    # ... and of those, the ones that may also go on a shared server connection
    shareable: set[bytes] = field(default_factory=set, compare=False, repr=False)

    def all_plain(self, names: list[bytes]) -> bool:
        """True when no command named needs more than forwarding: none is special and all are
        allowed. Spellings seen before cost one set operation for the whole read, however many
        commands it holds; the memo is bounded (cleared when full) and dies with the policy."""
        seen = set(names)
        plain = self.plain
        if seen <= plain:
            return True
        special, allow = self.special, self.allow
        for spelled in seen - plain:
            name = spelled.lower()
            if name in special or (allow is not None and name not in allow):
                return False
            if len(spelled) <= 64:  # real command names are short; nothing long is kept
                if len(plain) >= _PLAIN_MEMO_MAX:
                    plain.clear()
                plain.add(spelled)
        return True

    def all_shareable(self, names: list[bytes]) -> bool:
        """True when every command named is plain (see all_plain) and one a shared server connection
        may carry (redis_shared.SHAREABLE). Memoised per spelling like all_plain."""
        memo = self.shareable
        if len(names) == 1:
            if names[0] in memo:
                return True
        elif memo.issuperset(names):
            return True
        if not self.all_plain(names):
            return False
        for spelled in set(names) - memo:
            if spelled.lower() not in SHAREABLE:
                return False
            if len(spelled) <= 64:
                if len(memo) >= _PLAIN_MEMO_MAX:
                    memo.clear()
                memo.add(spelled)
        return True

    def judge(self, name: bytes, args: list[bytes]) -> list[Verdict]:
        """Every verdict of the rules on a command already past the deny and allow lists."""
        matchers = self.inspect.get(name)
        if not matchers:
            return []
        verdicts = []
        for matcher in matchers:
            verdict = matcher.judge(name, args)
            if verdict is not None:
                verdicts.append(verdict)
        return verdicts

    def check_password(self, username: bytes | None, password: bytes) -> bool:
        if self.auth is None:
            return False
        user_ok = username is None or username.decode("utf-8", "replace") == self.auth.username
        given = hashlib.sha256(password).hexdigest()
        return hmac.compare_digest(given, self.auth.password_sha256) and user_ok

    def describe(self) -> str:
        blocking = sorted(rule_id.rsplit(".", 1)[-1] for rule_id, a in self.actions.items() if a == "block")
        alerting = sorted(rule_id.rsplit(".", 1)[-1] for rule_id, a in self.actions.items() if a == "alert")
        parts = [f"blocking {', '.join(blocking) or 'nothing'}"]
        if alerting:
            parts.append(f"alerting on {', '.join(alerting)}")
        if self.deny:
            parts.append(f"{len(self.deny)} denied commands")
        if self.allow is not None:
            parts.append(f"only {len(self.allow)} allowed commands")
        if self.renames:
            parts.append(f"{len(self.renames)} renamed commands")
        parts.append("AUTH required at the proxy" if self.auth else "no AUTH at the proxy")
        sharing = self.source.shared_connections
        parts.append(f"clients share {sharing} server connection{'s' if sharing != 1 else ''} for keyspace commands"
                     if sharing and not self.auth else "a server connection per client")
        return "; ".join(parts)


def compile_policy(policy: RedisPolicy) -> CompiledPolicy:
    rules = builtin_rules()
    by_id = {r.id: r for r in rules}
    unknown = sorted(set(policy.rules) - set(by_id))
    if unknown:
        raise ValueError(f"rules: unknown rule ids {', '.join(unknown)} (known: {', '.join(sorted(by_id))})")
    events: dict[str, Rule] = {}
    actions: dict[str, str] = {}
    inspect: dict[bytes, list[_Matcher]] = {}
    for rule in rules:
        match = rule.match
        if match["kind"] == "event":
            if rule.id in policy.rules:
                raise ValueError(f"rules: {rule.id} is always enforced and has no action to change")
            events[match["event"]] = rule
            continue
        action = policy.rules.get(rule.id, match["action"])
        actions[rule.id] = action
        if action == "off":
            continue
        kind = match["kind"]
        matcher = _Matcher(
            rule=rule, action=action, kind=kind,
            subcommands=frozenset(s.encode() for s in match.get("subcommands", [])),
            parameters=frozenset(p.encode() for p in match.get("parameters", [])),
            patterns=tuple(re.compile(p.encode(), re.IGNORECASE) for p in match.get("patterns", [])),
            dynamic=frozenset(d.encode() for d in match.get("dynamic_commands", [])),
        )
        names = ([n.encode() for n in match["commands"]] if kind == "command"
                 else [b"config"] if kind == "config_set" else sorted(SCRIPT_COMMANDS))
        for name in names:
            inspect.setdefault(name, []).append(matcher)
    missing = sorted(set(EVENTS) - set(events))
    if missing:
        raise ValueError(f"built-in rules lack the events {', '.join(missing)}")
    # block before alert, then the most severe: the first blocking verdict names the refusal
    ordered = {name: tuple(sorted(ms, key=lambda m: (m.action != "block", -m.rule.severity.rank, m.rule.id)))
               for name, ms in inspect.items()}
    deny = frozenset(n.encode() for n in policy.deny_commands)
    allow = frozenset(n.encode() for n in policy.allow_commands) | ALWAYS_ALLOWED if policy.allow_commands else None
    renames = {new.encode(): old.encode() for old, new in policy.rename_commands.items()}
    hidden = frozenset(old.encode() for old in policy.rename_commands)
    limits = Limits(max_bulk=policy.limits.max_bulk_bytes, max_array=policy.limits.max_array_items,
                    max_inline=policy.limits.max_inline_bytes, max_request=policy.limits.max_request_bytes)
    auth_names = {b"auth", b"hello", b"reset"} if policy.require_auth else set()
    special = frozenset(ordered) | deny | frozenset(renames) | hidden | auth_names
    return CompiledPolicy(source=policy, limits=limits, inspect=ordered, deny=deny, allow=allow, renames=renames,
                          hidden=hidden, auth=policy.require_auth, events=events, actions=actions, special=special)
