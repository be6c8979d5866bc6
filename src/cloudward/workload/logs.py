"""Authentication logs: SSH brute force and guessed passwords, new accounts, privileged groups, sudo.

Why: the THREAT-MAP's SSH row ends in the auth log. A bot guessing passwords leaves a burst of
`Failed password` / `Invalid user` lines from one address; if one of them is followed by
`Accepted password` from the same address, the password was guessed and the intruder is in (T1110 +
T1078). What crews do next is also logged there: `useradd` (a uid-0 or extra account), `usermod -aG
sudo|docker`, `sudo` commands as root, `passwd root`.

Input: syslog files as rsyslog writes them — the RFC3164 prefix (`Nov 27 08:00:01 host sshd[123]:`,
whose year is inferred: the latest year that does not put the line after the file's modification
time) and the ISO 8601 prefix (`2026-11-27T08:00:01.123456+00:00 host sshd[123]:`, Debian 12's
rsyslog default); gzip-rotated files (by their magic, read streaming); and the systemd journal
(`journalctl -o json`). Times without a zone are taken as UTC.

Bounded on hostile and gigantic input: files are read line by line (a line longer than MAX_LINE is
skipped and counted, never held whole), binary garbage lines are counted and skipped, state is kept
per source address with fixed-size windows, at most `max_sources` addresses are tracked (the least
recently seen harmless one is forgotten first), and lists in facts are capped.

Output: `HostObservation`s judged by rules/logs.yaml — `auth_source` (one per address: failures,
users tried, first/last time, brute force, success after failures), `auth_login` (accepted logins
per user and method), `sudo_user` (sudo use per user), `auth_event` (account changes) and
`auth_log` (what was read, per file).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import IO, Any

from cloudward.core.finding import Target
from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.workload.evaluate import compile_rules, evaluate
from cloudward.workload.observation import HostObservation

__all__ = [
    "DEFAULT_FILES",
    "JOURNAL_IDENTIFIERS",
    "AuthLogAnalyzer",
    "LogOptions",
    "default_files",
    "journal_entries",
    "open_log",
    "read_lines",
    "run_logs",
]

DEFAULT_FILES = ("/var/log/auth.log", "/var/log/secure")
JOURNAL_IDENTIFIERS = ("sshd", "sshd-session", "sudo", "useradd", "usermod", "userdel", "groupadd", "groupmod",
                       "gpasswd", "passwd", "chpasswd", "su")
MAX_LINE = 64 * 1024
MAX_LIST = 20
PRIVILEGED_GROUPS = ("root", "sudo", "wheel", "admin", "docker", "lxd", "disk")
PASSWORD_METHODS = ("password", "keyboard-interactive", "keyboard-interactive/pam")
_PROGRAMS = {"sshd": "sshd", "sshd-session": "sshd", "sudo": "sudo", "useradd": "account", "usermod": "account",
             "userdel": "account", "groupadd": "account", "groupmod": "account", "gpasswd": "account",
             "passwd": "account", "chpasswd": "account", "adduser": "account"}
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), start=1)}
# Cheap pre-filter: a line without any of these cannot be an event we parse.
_INTERESTING = (b"sshd", b"sudo", b"user", b"group", b"passwd")

_RFC3164 = re.compile(r"^(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<hms>\d\d:\d\d:\d\d) (?P<host>\S+) "
                      r"(?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)$")
_ISO = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?) (?P<host>\S+) "
                  r"(?P<prog>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)$")
_REPEATED = re.compile(r"^message repeated (?P<n>\d{1,9}) times: \[ ?(?P<msg>.*?)\]?$")
# Greedy user: the address is the *last* " from X port N", whatever a hostile user name holds.
_FAILED = re.compile(r"^Failed (?P<method>\S+) for (?P<invalid>invalid user )?(?P<user>.*) from (?P<addr>\S+) "
                     r"port \d+")
_INVALID = re.compile(r"^Invalid user (?P<user>.*) from (?P<addr>\S+)(?: port \d+)?")
_ACCEPTED = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>.*) from (?P<addr>\S+) port \d+")
_SUDO = re.compile(r"^\s*(?P<user>\S+) : (?P<rest>.*)$")
_SUDO_TRIES = re.compile(r"(?P<n>\d+) incorrect password attempts?")
_NEW_USER = re.compile(r"^new user: name=(?P<name>[^,]*), UID=(?P<uid>-?\d+), GID=(?P<gid>-?\d+)"
                       r"(?:, home=(?P<home>[^,]*))?(?:, shell=(?P<shell>[^,]*))?")
_NEW_GROUP = re.compile(r"^new group: name=(?P<name>[^,]*), GID=(?P<gid>-?\d+)")
_ADD_TO_GROUP = re.compile(r"^add '(?P<user>[^']*)' to group '(?P<group>[^']*)'")
_GPASSWD_ADD = re.compile(r"^user (?P<user>\S+) added by (?P<by>\S+) to group (?P<group>\S+)")
_UID_CHANGE = re.compile(r"^change user '(?P<user>[^']*)' UID from '(?P<old>-?\d+)' to '(?P<new>-?\d+)'")
_PASSWORD_CHANGED = re.compile(r"password changed for (?P<user>\S+)")
_DELETE_USER = re.compile(r"^delete user '(?P<user>[^']*)'")


@dataclass
class LogOptions:
    threshold: int = 10  # failures from one address ...
    window: float = 600.0  # ... within this many seconds make a brute force
    max_sources: int = 20_000
    max_events: int = 5_000  # account events kept (each becomes an observation)
    max_line: int = MAX_LINE
    tail_bytes: int | None = None  # read only the last N bytes of each plain file

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= 100_000:
            raise ValueError("the brute-force threshold must be between 1 and 100000 failures")
        if not 0 < self.window <= 366 * 86400:
            raise ValueError("the brute-force window must be between 1 second and a year")


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _cap(text: str, size: int = 256) -> str:
    return text if len(text) <= size else text[:size] + "…"


def _address(text: str) -> str:
    text = text[:100]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


@dataclass
class _Source:
    address: str
    window: deque[float]
    failures: int = 0
    invalid_users: int = 0
    users: dict[str, int] = field(default_factory=dict)
    users_more: bool = False
    first: float | None = None
    last: float | None = None
    brute_force: bool = False
    burst_start: float | None = None
    burst_end: float | None = None
    failures_at_burst: int = 0
    accepted: int = 0
    accepted_users: list[str] = field(default_factory=list)
    accepted_methods: list[str] = field(default_factory=list)
    success: dict[str, Any] | None = None
    pending_invalid: str | None = None
    files: list[str] = field(default_factory=list)

    def touch(self, when: float | None, file: str) -> None:
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        if file not in self.files and len(self.files) < 10:
            self.files.append(file)

    def tried(self, user: str) -> None:
        if user in self.users:
            self.users[user] += 1
        elif len(self.users) < 50:
            self.users[user] = 1
        else:
            self.users_more = True


@dataclass
class _Login:
    user: str
    method: str
    count: int = 0
    sources: list[str] = field(default_factory=list)
    first: float | None = None
    last: float | None = None
    file: str = ""


@dataclass
class _Sudo:
    user: str
    as_root: int = 0
    as_other: int = 0
    failed_attempts: int = 0
    not_in_sudoers: int = 0
    denied: int = 0
    commands: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    suspicious: list[str] = field(default_factory=list)
    first: float | None = None
    last: float | None = None
    file: str = ""


@dataclass
class _FileStats:
    path: str
    lines: int = 0
    events: int = 0
    garbage_lines: int = 0
    overlong_lines: int = 0
    unparsed_lines: int = 0
    first: float | None = None
    last: float | None = None
    formats: dict[str, int] = field(default_factory=dict)
    error: str = ""
    tail_from: int = 0
    compressed: bool = False


class AuthLogAnalyzer:
    """Feed it lines (or journal entries) in time order; then read `observations()`."""

    def __init__(self, options: LogOptions | None = None) -> None:
        self.options = options or LogOptions()
        self.sources: OrderedDict[str, _Source] = OrderedDict()
        self.sources_forgotten = 0
        self.logins: dict[tuple[str, str], _Login] = {}
        self.sudo: dict[str, _Sudo] = {}
        self.events: list[HostObservation] = []
        self.events_dropped = 0
        self.files: list[_FileStats] = []
        self._time_cache: dict[str, float | None] = {}
        self._reference = datetime.now(UTC).replace(tzinfo=None)

    # --- reading ---------------------------------------------------------------------------------

    def feed_file(self, path: str, handle: IO[bytes], *, reference: datetime | None = None,
                  stats: _FileStats | None = None) -> _FileStats:
        """Read one open (binary, possibly gzip) log; a decompression error ends the file with
        `error` set, keeping what was read before it."""
        stats = stats or _FileStats(path)
        self.files.append(stats)
        self._reference = (reference or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
        self._time_cache.clear()
        try:
            for raw in read_lines(handle, self.options.max_line):
                stats.lines += 1
                if raw is None:
                    stats.overlong_lines += 1
                    continue
                self._line(raw, stats)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            stats.error = f"{path}: {reason} (after {stats.lines:,} lines)"
        return stats

    def _line(self, raw: bytes, stats: _FileStats) -> None:
        if b"\x00" in raw:
            stats.garbage_lines += 1
            return
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.count("\ufffd") * 4 > len(text):  # mostly not text: binary garbage
                stats.garbage_lines += 1
                return
        if not any(word in raw for word in _INTERESTING):
            return
        match = _ISO.match(text) if text[:1].isdigit() else _RFC3164.match(text)
        if match is None:
            stats.unparsed_lines += 1
            return
        fmt = "iso8601" if "ts" in match.groupdict() else "rfc3164"
        stats.formats[fmt] = stats.formats.get(fmt, 0) + 1
        when = self._time(match)
        if when is not None:
            stats.first = when if stats.first is None else min(stats.first, when)
            stats.last = when if stats.last is None else max(stats.last, when)
        if self.message(match["prog"], match["msg"], when, stats.path):
            stats.events += 1

    def _time(self, match: re.Match[str]) -> float | None:
        groups = match.groupdict()
        key = groups.get("ts") or f"{groups['mon']} {groups['day']} {groups['hms']}"
        if key in self._time_cache:
            return self._time_cache[key]
        if len(self._time_cache) > 4096:
            self._time_cache.clear()
        value: float | None
        if groups.get("ts"):
            try:
                parsed = datetime.fromisoformat(key.replace("Z", "+00:00"))
                value = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
            except ValueError:
                value = None
        else:
            value = self._rfc3164(groups["mon"], int(groups["day"]), groups["hms"])
        self._time_cache[key] = value
        return value

    def _rfc3164(self, month_name: str, day: int, hms: str) -> float | None:
        month = _MONTHS.get(month_name)
        if month is None:
            return None
        hour, minute, second = (int(x) for x in hms.split(":"))
        limit = self._reference + timedelta(days=2)
        for year in range(self._reference.year, self._reference.year - 5, -1):  # Feb 29 needs a leap year
            try:
                when = datetime(year, month, day, hour, minute, second)
            except ValueError:
                continue
            if when <= limit:
                return when.replace(tzinfo=UTC).timestamp()
        return None

    def feed_journal(self, entries: Iterable[dict[str, Any]], label: str = "journal") -> _FileStats:
        stats = _FileStats(label)
        self.files.append(stats)
        for entry in entries:
            stats.lines += 1
            message = entry.get("MESSAGE")
            if isinstance(message, list):  # journald gives non-UTF-8 messages as byte arrays
                try:
                    message = bytes(int(b) & 0xFF for b in message[:MAX_LINE]).decode("utf-8", "replace")
                except (TypeError, ValueError):
                    stats.garbage_lines += 1
                    continue
            if not isinstance(message, str):
                stats.garbage_lines += 1
                continue
            program = str(entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "")
            when: float | None
            try:
                when = int(entry.get("__REALTIME_TIMESTAMP", "")) / 1_000_000
            except (TypeError, ValueError):
                when = None
            stats.formats["journal"] = stats.formats.get("journal", 0) + 1
            if when is not None:
                stats.first = when if stats.first is None else min(stats.first, when)
                stats.last = when if stats.last is None else max(stats.last, when)
            if self.message(program, message[:MAX_LINE], when, label):
                stats.events += 1
        return stats

    # --- events ----------------------------------------------------------------------------------

    def message(self, program: str, message: str, when: float | None, file: str) -> bool:
        """One syslog message of `program`; True when it was an event we track."""
        kind = _PROGRAMS.get(program)
        if kind is None:
            return False
        count = 1
        repeated = _REPEATED.match(message)
        if repeated:
            count, message = min(int(repeated["n"]), 1_000_000), repeated["msg"]
        if kind == "sshd":
            return self._sshd(message, when, file, count)
        if kind == "sudo":
            return self._sudo(message, when, file, count)
        return self._account(program, message, when, file)

    def _source(self, address: str) -> _Source | None:
        source = self.sources.get(address)
        if source is not None:
            self.sources.move_to_end(address)
            return source
        if len(self.sources) >= self.options.max_sources:
            # Forget the least recently seen address that shows nothing worth reporting.
            for old_address, old in list(self.sources.items())[:200]:
                if not old.brute_force and old.accepted == 0:
                    del self.sources[old_address]
                    self.sources_forgotten += 1
                    break
            else:
                self.sources_forgotten += 1
                return None
        source = _Source(address, deque(maxlen=self.options.threshold))
        self.sources[address] = source
        return source

    def _fail(self, source: _Source, when: float | None, count: int) -> None:
        source.failures += count
        if when is None:
            return
        for _ in range(min(count, self.options.threshold)):
            source.window.append(when)
        if len(source.window) >= self.options.threshold and source.window[-1] - source.window[0] <= self.options.window:
            if not source.brute_force:
                source.brute_force = True
                source.burst_start = source.window[0]
                source.failures_at_burst = source.failures
            source.burst_end = when

    def _sshd(self, message: str, when: float | None, file: str, count: int) -> bool:
        match = _FAILED.match(message)
        if match:
            source = self._source(_address(match["addr"]))
            if source is None:
                return True
            user = _cap(match["user"], 64)
            source.touch(when, file)
            if match["invalid"] and source.pending_invalid == user:
                source.pending_invalid = None  # that attempt was counted by its "Invalid user" line
                count -= 1
            source.tried(user)
            if count > 0:
                self._fail(source, when, count)
            return True
        match = _INVALID.match(message)
        if match:
            source = self._source(_address(match["addr"]))
            if source is None:
                return True
            user = _cap(match["user"], 64)
            source.touch(when, file)
            source.invalid_users += count
            source.pending_invalid = user
            source.tried(user)
            self._fail(source, when, count)
            return True
        match = _ACCEPTED.match(message)
        if match:
            address, user, method = _address(match["addr"]), _cap(match["user"], 64), match["method"][:64]
            self._accepted(address, user, method, when, file)
            return True
        return False

    def _accepted(self, address: str, user: str, method: str, when: float | None, file: str) -> None:
        login = self.logins.get((user, method))
        if login is None:
            if len(self.logins) >= 10_000:
                return
            login = self.logins[(user, method)] = _Login(user, method, file=file)
        login.count += 1
        if address not in login.sources and len(login.sources) < MAX_LIST:
            login.sources.append(address)
        if when is not None:
            login.first = when if login.first is None else min(login.first, when)
            login.last = when if login.last is None else max(login.last, when)
        source = self._source(address)
        if source is None:
            return
        source.touch(when, file)
        source.accepted += 1
        source.pending_invalid = None
        if user not in source.accepted_users and len(source.accepted_users) < MAX_LIST:
            source.accepted_users.append(user)
        if method not in source.accepted_methods and len(source.accepted_methods) < 10:
            source.accepted_methods.append(method)
        if source.brute_force and source.success is None:
            source.success = {"user": user, "method": method, "time": _iso(when),
                              "failures_before": source.failures,
                              "user_was_tried": user in source.users,
                              "password": method in PASSWORD_METHODS}

    def _sudo(self, message: str, when: float | None, file: str, count: int) -> bool:
        match = _SUDO.match(message)
        if not match or (" ; " not in match["rest"] and "COMMAND=" not in match["rest"]):
            return False
        user = _cap(match["user"], 64)
        rest = match["rest"]
        state = self.sudo.get(user)
        if state is None:
            if len(self.sudo) >= 5_000:
                return True
            state = self.sudo[user] = _Sudo(user, file=file)
        if when is not None:
            state.first = when if state.first is None else min(state.first, when)
            state.last = when if state.last is None else max(state.last, when)
        head, _, _ = rest.partition(" ; ")
        fields: dict[str, str] = {}
        before_command, _, command = rest.partition("COMMAND=")
        for part in before_command.split(" ; "):
            name, sep, value = part.partition("=")
            if sep and name.strip().isupper():
                fields[name.strip()] = value.strip()
        command = _cap(command.strip(), 512)
        if "=" not in head:  # a message before the fields: a failure of some kind
            tries = _SUDO_TRIES.search(head)
            if tries:
                state.failed_attempts += int(tries["n"]) * count
            elif "NOT in sudoers" in head:
                state.not_in_sudoers += count
            else:
                state.denied += count
            return True
        if fields.get("USER", "root") == "root":
            state.as_root += count
        else:
            state.as_other += count
        if command:
            state.commands.append(command)
            if len(state.suspicious) < 5 and command not in state.suspicious and _suspicious(command):
                state.suspicious.append(command)
        return True

    def _account(self, program: str, message: str, when: float | None, file: str) -> bool:
        facts: dict[str, Any] | None = None
        if m := _NEW_USER.match(message):
            facts = {"kind": "new_user", "user": m["name"], "uid": int(m["uid"]), "gid": int(m["gid"]),
                     "home": m["home"] or "", "shell": m["shell"] or ""}
            facts["uid0"] = facts["uid"] == 0
        elif m := _NEW_GROUP.match(message):
            facts = {"kind": "new_group", "group": m["name"], "gid": int(m["gid"])}
        elif (m := _ADD_TO_GROUP.match(message)) or (m := _GPASSWD_ADD.match(message)):
            facts = {"kind": "group_member", "user": m["user"], "group": m["group"]}
        elif m := _UID_CHANGE.match(message):
            facts = {"kind": "uid_changed", "user": m["user"], "uid_before": int(m["old"]), "uid": int(m["new"])}
            facts["uid0"] = facts["uid"] == 0
        elif m := _DELETE_USER.match(message):
            facts = {"kind": "user_deleted", "user": m["user"]}
        elif "chauthtok" in message and (m := _PASSWORD_CHANGED.search(message)):
            facts = {"kind": "password_changed", "user": m["user"]}
        if facts is None:
            return False
        if len(self.events) >= self.options.max_events:
            self.events_dropped += 1
            return True
        for name in ("user", "group", "home", "shell"):
            if name in facts:
                facts[name] = _cap(str(facts[name]), 128)
        facts["program"] = program
        facts["time"] = _iso(when)
        facts.setdefault("uid0", False)
        facts["privileged_group"] = facts.get("group") in PRIVILEGED_GROUPS if facts["kind"] == "group_member" \
            else False
        key = f"{facts['kind']}:{facts.get('user', '')}:{facts.get('group', '')}:{facts['time']}"
        self.events.append(HostObservation("auth_event", facts, path=file, key=key))
        return True

    # --- results ---------------------------------------------------------------------------------

    def observations(self) -> Iterator[HostObservation]:
        opts = self.options
        for source in self.sources.values():
            if source.failures == 0 and source.accepted == 0:
                continue
            users = sorted(source.users, key=lambda u: (-source.users[u], u))
            facts: dict[str, Any] = {
                "address": source.address,
                "failures": source.failures,
                "invalid_user_attempts": source.invalid_users,
                "users_tried": users[:MAX_LIST],
                "users_tried_count": len(source.users),
                "users_tried_more": source.users_more or len(users) > MAX_LIST,
                "first_seen": _iso(source.first),
                "last_seen": _iso(source.last),
                "threshold": opts.threshold,
                "window_seconds": opts.window,
                "brute_force": source.brute_force,
                "burst_start": _iso(source.burst_start),
                "burst_end": _iso(source.burst_end),
                "accepted": source.accepted,
                "accepted_users": list(source.accepted_users),
                "accepted_methods": list(source.accepted_methods),
                "success_after_failures": source.success is not None,
                "files": list(source.files),
                "private_address": _private(source.address),
            }
            if source.success is not None:
                facts.update({f"success_{k}": v for k, v in source.success.items()})
            yield HostObservation("auth_source", facts, path=source.files[0] if source.files else None,
                                  key=source.address)
        for login in self.logins.values():
            yield HostObservation("auth_login", {
                "user": login.user, "method": login.method, "count": login.count, "sources": list(login.sources),
                "first_seen": _iso(login.first), "last_seen": _iso(login.last),
                "password": login.method in PASSWORD_METHODS,
            }, path=login.file, key=f"{login.user}:{login.method}")
        for state in self.sudo.values():
            yield HostObservation("sudo_user", {
                "user": state.user, "as_root": state.as_root, "as_other": state.as_other,
                "failed_attempts": state.failed_attempts, "not_in_sudoers": state.not_in_sudoers,
                "denied": state.denied, "recent_commands": list(state.commands),
                "suspicious_commands": list(state.suspicious), "suspicious": bool(state.suspicious),
                "first_seen": _iso(state.first), "last_seen": _iso(state.last),
            }, path=state.file, key=state.user)
        yield from self.events
        for stats in self.files:
            yield HostObservation("auth_log", {
                "lines": stats.lines, "events": stats.events, "garbage_lines": stats.garbage_lines,
                "overlong_lines": stats.overlong_lines, "unparsed_lines": stats.unparsed_lines,
                "first_time": _iso(stats.first), "last_time": _iso(stats.last), "formats": dict(stats.formats),
                "error": stats.error, "compressed": stats.compressed, "read_from_offset": stats.tail_from,
                "sources_forgotten": self.sources_forgotten, "events_dropped": self.events_dropped,
            }, path=stats.path, key=stats.path)


def _private(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback


def _suspicious(command: str) -> bool:
    from cloudward.workload.shell import shell_traits

    traits = shell_traits(command)
    return bool(traits.get("downloads_and_executes") or traits.get("base64_pipeline") or traits.get("runs_from_tmp")
                or traits.get("evasion"))


# --- files -----------------------------------------------------------------------------------------


def read_lines(handle: IO[bytes], max_line: int = MAX_LINE) -> Iterator[bytes | None]:
    """Lines of a binary stream, each at most `max_line` bytes; None for a longer line (its rest is
    skipped without being held)."""
    while True:
        line = handle.readline(max_line)
        if not line:
            return
        if len(line) >= max_line and not line.endswith(b"\n"):
            while True:  # drain the rest of the overlong line
                more = handle.readline(max_line)
                if not more or more.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def open_log(host_path: str, tail_bytes: int | None = None) -> tuple[IO[bytes], bool, int, datetime]:
    """(stream, compressed, offset read from, mtime) of a log file: regular files only (a FIFO or a
    device would hang or never end), gzip by its magic; `tail_bytes` reads only a plain file's end
    (starting at the next full line)."""
    fd = os.open(host_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(22, "not a regular file")
        os.set_blocking(fd, True)
        handle: IO[bytes] = os.fdopen(fd, "rb", buffering=1 << 16)
    except BaseException:
        os.close(fd)
        raise
    mtime = datetime.fromtimestamp(info.st_mtime, UTC)
    magic = handle.read(2)
    handle.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle, mode="rb"), True, 0, mtime  # type: ignore[return-value]
    offset = 0
    if tail_bytes is not None and info.st_size > tail_bytes:
        offset = info.st_size - tail_bytes
        handle.seek(offset - 1)
        if handle.read(1) != b"\n":
            for _ in read_lines(handle):  # skip the partial first line
                break
    return handle, False, offset, mtime


def _rotation_key(path: str, *, base: str) -> tuple[int, str]:
    suffix = path[len(base):].lstrip(".")
    number = suffix.split(".", 1)[0]
    return (-int(number) if number.isdigit() else 0, path)


def default_files(exists: Callable[[str], bool] = os.path.isfile,
                  listdir: Callable[[str], list[str]] = os.listdir) -> list[str]:
    """The auth logs of this machine, oldest first: auth.log.N.gz … auth.log.1, auth.log (and secure)."""
    out: list[str] = []
    for base in DEFAULT_FILES:
        directory, name = base.rsplit("/", 1)
        try:
            names = listdir(directory)
        except OSError:
            continue
        rotated = [f"{directory}/{n}" for n in names if n.startswith(name + ".") and (
            n[len(name) + 1:].split(".", 1)[0].isdigit() or n[len(name) + 1:].split("-", 1)[0].isdigit())]
        # Rotated by number: higher is older. Rotated by date (secure-20261120): sort by name.
        out.extend(sorted(rotated, key=partial(_rotation_key, base=base)))
        if exists(base):
            out.append(base)
    return out


def journal_entries(error: Callable[[str, str], None], max_entries: int = 2_000_000,
                    journalctl: str | None = None) -> Iterator[dict[str, Any]]:
    """Authentication-related entries of the systemd journal, streamed from `journalctl -o json`."""
    binary = journalctl or shutil.which("journalctl")
    if binary is None:
        return
    command = [binary, "-o", "json", "--no-pager", "-q", "-n", str(max_entries),
               *[f"SYSLOG_IDENTIFIER={name}" for name in JOURNAL_IDENTIFIERS]]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    except OSError as exc:
        error("journal", f"cannot run journalctl: {exc.strerror or exc}")
        return
    assert proc.stdout is not None
    try:
        for raw in read_lines(proc.stdout, 4 * MAX_LINE):
            if raw is None:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry
    finally:
        proc.stdout.close()
        try:
            stderr = proc.stderr.read(4096).decode("utf-8", "replace") if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.terminate()
            code = proc.wait()
            if proc.stderr:
                proc.stderr.close()
        if code not in (0, -15):
            error("journal", f"journalctl exited with {code}: {stderr.strip()[:300]}")


def analyze_file(analyzer: AuthLogAnalyzer, label: str, host_path: str, error: Callable[[str, str], None]) -> None:
    """Feed one file to `analyzer`; unreadable or corrupt files become errors naming the file."""
    try:
        handle, compressed, offset, mtime = open_log(host_path, analyzer.options.tail_bytes)
    except OSError as exc:
        error(label, f"cannot read {label}: {exc.strerror or exc}")
        return
    stats = _FileStats(label, compressed=compressed, tail_from=offset)
    try:
        analyzer.feed_file(label, handle, reference=mtime, stats=stats)
    finally:
        handle.close()
    if stats.error:
        error(label, stats.error)


def run_logs(files: Sequence[str], rules: Iterable[Rule], *, options: LogOptions | None = None,
             journal: bool = False, target: Target | None = None,
             journal_source: Callable[[Callable[[str, str], None]], Iterable[dict[str, Any]]] | None = None,
             ) -> ScanResult:
    """Analyse `files` (and the journal when asked) and judge the observations: a `logs` ScanResult."""
    import socket

    targets = list(files) + (["journal"] if journal else [])
    result = ScanResult(kind="logs", targets=targets)
    chosen = target or Target(kind="host", name=socket.gethostname())
    compiled = compile_rules(rules)
    analyzer = AuthLogAnalyzer(options)

    def error(item: str, message: str) -> None:
        result.add_error(item, message, "logs")

    try:
        for path in files:
            analyze_file(analyzer, path, path, error)
        if journal:
            analyzer.feed_journal((journal_source or journal_entries)(error))
        observations = 0
        for observation in analyzer.observations():
            observations += 1
            result.findings.extend(evaluate(observation, compiled, chosen, "/"))
            if observation.subject == "auth_log":
                result.inventory.append({"kind": "auth_log", "path": observation.path, **dict(observation.facts)})
    except KeyboardInterrupt:
        result.stats.update(partial=True)
        return result.finish(ScanStatus.CANCELLED)
    result.stats.update(observations=observations, files=len(analyzer.files), sources=len(analyzer.sources))
    return result.finish()
