"""Runtime guards (opt-in): for the duration of a request, commands, file opens, connections to the
cloud metadata service and SQL statements are checked against the request's own values, and refused
in block mode when a request value steers them.

- a command (`subprocess.Popen`, `os.system`, `os.exec*`, `os.posix_spawn`, `os.spawn*`) whose text
  holds a request value that carries shell syntax (`;`, `|`, `&`, `` ` ``, `$(`, `<`, `>`, a newline);
- a file open whose path holds a request value that climbs directories (`..`) or is absolute;
- a connection to the metadata service (169.254.169.254, fd00:ec2::254, 100.100.100.200 …) while a
  request value names it, in any spelling the SSRF detector reads (decimal, hex, IPv6-mapped, names);
- a SQL statement (SQLAlchemy, psycopg 3, psycopg2, asyncpg, sqlite3, aiosqlite: see sqlguard) whose
  text holds a request value that is syntax rather than data there: it spans tokens of the statement
  (closes a string, adds a keyword, an operator, a comment) instead of lying inside one literal or
  name (see sqllex). Parameterised values never are in the text; a value inlined but properly quoted
  stays inside its literal. For SQL a value is also looked for in the forms an application might
  decode it to (double URL encoding, entities, `\\u` escapes: decode.variants) and escape it to (`'`
  doubled or backslashed). Matching text is not taint tracking: a value can coincide with the
  statement's own text. Two such coincidences are told apart — a quoted copy of the value meeting
  the text at its literal's edge (sqllex), and a statement whose exact text already ran clean in an
  earlier request — the rest (a value like `(a` the first time `INSERT INTO t (a, b) …` runs) is
  flagged.

The first three come from the process audit hook (PEP 578); the standard library has no audit event
for SQL, so the database libraries' execute calls are hooked instead (sqlguard). A refused call raises
GuardViolation (a PermissionError) in the application, as an exception from the call itself, before
it runs; in monitor mode the call goes ahead and is reported. Each statement is judged once per request.

The hooks are installed once per process (audit hooks cannot be removed) and cost one ContextVar read
per audited event or SQL execute outside a guarded request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from cloudward.appsec import detectors, sqlguard, sqllex
from cloudward.appsec.decode import variants
from cloudward.appsec.memo import Memo

__all__ = ["GuardViolation", "Violation", "check_sql", "guarding", "install", "sql_fragments", "sql_violation",
           "violation"]

MIN_FRAGMENT = 2  # shorter values are everywhere and steer nothing
_SHELL = (";", "|", "&", "`", "$(", "<", ">", "\n", "\r")
_COMMANDS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"})
_ONE_WORD = re.compile(r"\w+")  # letters, digits, _: always inside one SQL token, never syntax
MAX_SQL_SPELLINGS = 4 << 20  # characters of request values' extra SQL spellings looked for in a statement
MAX_JUDGED = 256  # statements remembered per request (repeats, and the same statement seen by two hooks)
MAX_CLEAN_SQL = 8192  # characters of a statement remembered as having run clean
# Statements that ran in a guarded request with no request value in their syntax. The same text in a
# later request was not written by that request's values, whatever they coincide with (a value `(a`
# meeting `INSERT INTO t (a, b) VALUES (?, ?)`), and running it again does nothing that had not run.
_ran_clean: Memo[bool] = Memo(2048)


class GuardViolation(PermissionError):
    """A call a request value steered, refused by cloudward's runtime guards."""


@dataclass(frozen=True)
class Violation:
    kind: str  # command, file, metadata, sql
    fragment: str  # the request value that steered the call
    detail: str  # the call's argument, cut short


class _SqlMemo:
    """What one request's SQL checks share: the values' SQL forms (made on the first statement) and
    the verdict on each statement judged so far."""

    __slots__ = ("complete", "fragments", "judged")

    def __init__(self) -> None:
        self.fragments: tuple[tuple[str, ...], ...] | None = None
        self.complete = True  # every spelling of every value is looked for
        self.judged: dict[tuple[str, str], Violation | None] = {}


@dataclass(frozen=True)
class _Guarded:
    fragments: tuple[str, ...]
    block: bool
    report: Callable[[Violation, bool], None]  # (violation, blocked)
    sql: _SqlMemo = field(default_factory=_SqlMemo)


_current: ContextVar[_Guarded | None] = ContextVar("cloudward_appsec_guard", default=None)
_inside = threading.local()
_installed = False
_lock = threading.Lock()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return " ".join(_text(v) for v in value)
    try:
        import os

        return _text(os.fspath(value))
    except TypeError:
        return ""


def _metadata_host(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.rstrip(".").lower() in detectors.METADATA_NAMES
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address) in detectors.METADATA_IPS


def violation(fragments: Sequence[str], event: str, args: tuple[Any, ...]) -> Violation | None:
    """The request value that steers this audited call, if one does (pure: what the hook decides)."""
    if event in _COMMANDS:
        # os.system(command); subprocess.Popen(executable, args, ...); os.exec / os.posix_spawn(path, argv, ...);
        # os.spawn(mode, path, args, ...)
        where = {"os.system": 0, "os.spawn": 2}.get(event, 1)
        command = _text(args[where]) if len(args) > where else ""
        if event == "subprocess.Popen" and not command and args:
            command = _text(args[0])
        for fragment in fragments:
            if fragment in command and any(mark in fragment for mark in _SHELL):
                return Violation("command", fragment, command[:200])
    elif event == "open":
        if not args or not isinstance(args[0], str | bytes):
            return None
        path = _text(args[0])
        for fragment in fragments:
            if fragment in path and (".." in fragment or fragment.startswith(("/", "\\", "~")) or "\x00" in fragment):
                return Violation("file", fragment, path[:200])
    elif event == "socket.connect":
        address = args[1] if len(args) > 1 else None
        if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
            return None
        if not _metadata_host(address[0]):
            return None
        for fragment in fragments:
            if address[0] in fragment or any(hit.kind == "metadata"
                                             for hit in detectors.ssrf_hits(fragment, url_param=True)):
                return Violation("metadata", fragment, f"{address[0]}:{address[1] if len(address) > 1 else ''}")
    return None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    guarded = _current.get()
    if guarded is None or getattr(_inside, "busy", False):
        return
    if event not in _COMMANDS and event not in ("open", "socket.connect"):
        return
    _inside.busy = True
    try:
        found = violation(guarded.fragments, event, args)
        if found is None:
            return
        with contextlib.suppress(Exception):  # reporting must never change what the app sees
            guarded.report(found, guarded.block)
    finally:
        _inside.busy = False
    if guarded.block:
        raise GuardViolation(f"cloudward appsec: {found.kind} call steered by a request value refused")


def sql_fragments(fragments: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The request values to look for in SQL text, each as the spellings it may take there: as
    received, as the application might decode, trim and escape it. A bare word (`\\w+`) is left out,
    as it can only ever be data."""
    return _sql_spellings(fragments)[0]


def _sql_spellings(fragments: Sequence[str]) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """sql_fragments, and whether every spelling fits the budget. Every value keeps the spelling it
    was received in; past MAX_SQL_SPELLINGS characters the other spellings are left out (padding a
    request with values cannot push one out of sight)."""
    groups: dict[str, list[str]] = {}
    budget = MAX_SQL_SPELLINGS
    for fragment in fragments:
        if fragment not in groups and len(fragment) >= MIN_FRAGMENT and not _ONE_WORD.fullmatch(fragment):
            groups[fragment] = [fragment]
            budget -= len(fragment)
    complete = True
    for fragment in fragments:
        seen: dict[str, None] = dict.fromkeys(groups.get(fragment, ()))
        for form in variants(fragment):
            forms = [form, form.strip()]
            if "'" in form:
                forms += [form.replace("'", "''"), form.replace("'", "\\'")]
            if '"' in form:
                forms.append(form.replace('"', '""'))
            for one in forms:
                if one in seen or len(one) < MIN_FRAGMENT or _ONE_WORD.fullmatch(one):
                    continue
                if budget < len(one):
                    complete = False
                    continue
                seen[one] = None
                budget -= len(one)
                groups.setdefault(fragment, []).append(one)
    return tuple(tuple(spellings) for spellings in groups.values()), complete


def sql_violation(fragments: Sequence[Sequence[str]], statement: str, dialect: str = "ansi") -> Violation | None:
    """The request value that is syntax in this SQL statement, if one is (pure: what the SQL guard
    decides; `fragments` as sql_fragments gives them)."""
    lexed: sqllex.Lexed | None = None
    for spellings in fragments:
        for fragment in spellings:
            if fragment not in statement:
                continue
            lexed = lexed or sqllex.Lexed(statement, dialect)  # one reading for all the values found
            span = sqllex.steering_span(statement, fragment, dialect, same=spellings, lexed=lexed)
            if span is not None:
                return Violation("sql", fragment, sqllex.redact(statement, dialect, span))
    return None


def check_sql(statement: str, dialect: str) -> None:
    """What the SQL hooks call before a statement runs: judge it against the current request's
    values, report it, and in block mode raise GuardViolation."""
    guarded = _current.get()
    if guarded is None or getattr(_inside, "busy", False):
        return
    memo = guarded.sql
    key = (dialect, statement)
    if key in memo.judged:
        found = memo.judged[key]  # judged (and reported) before in this request
    else:
        _inside.busy = True
        try:
            try:
                if _ran_clean[key]:
                    found = None  # this very text ran before without a request value in its syntax
                else:
                    if memo.fragments is None:
                        memo.fragments, memo.complete = _sql_spellings(guarded.fragments)
                    found = sql_violation(memo.fragments, statement, dialect)
                    if found is None and memo.complete and len(statement) <= MAX_CLEAN_SQL:
                        _ran_clean.put(key, True)
            except Exception:  # a judge that fails lets the statement run (fail open, like the middleware)
                found = None
            if len(memo.judged) < MAX_JUDGED:
                memo.judged[key] = found
            if found is not None:
                with contextlib.suppress(Exception):
                    guarded.report(found, guarded.block)
        finally:
            _inside.busy = False
    if found is not None and guarded.block:
        raise GuardViolation("cloudward appsec: sql statement steered by a request value refused")


def install() -> None:
    """Add the audit hook to this process (once), and hook the database libraries loaded by now (again
    on every call until all are: see sqlguard)."""
    global _installed
    if not _installed:
        with _lock:
            if not _installed:
                sys.addaudithook(_hook)
                _installed = True
    sqlguard.install(check_sql, _current.get)


@contextlib.contextmanager
def guarding(fragments: Sequence[str], *, block: bool, report: Callable[[Violation, bool], None]) -> Iterator[None]:
    """Guard the calls made while this block runs (in this context: this task, or threads it copies
    its context to, as Starlette's thread pool does)."""
    install()
    kept = tuple(sorted({f for f in fragments if len(f) >= MIN_FRAGMENT}, key=len, reverse=True))
    token = _current.set(_Guarded(kept, block, report))
    try:
        yield
    finally:
        _current.reset(token)
