"""Runtime guards (opt-in): for the duration of a request, commands, file opens and connections to
the cloud metadata service are checked against the request's own values, through a process audit
hook (PEP 578), and refused in block mode when a request value steers them.

- a command (`subprocess.Popen`, `os.system`, `os.exec*`, `os.posix_spawn`, `os.spawn*`) whose text
  holds a request value that carries shell syntax (`;`, `|`, `&`, `` ` ``, `$(`, `<`, `>`, a newline);
- a file open whose path holds a request value that climbs directories (`..`) or is absolute;
- a connection to the metadata service (169.254.169.254, fd00:ec2::254, 100.100.100.200 …) while a
  request value names it, in any spelling the SSRF detector reads (decimal, hex, IPv6-mapped, names).

A refused call raises GuardViolation (a PermissionError) in the application, as an exception from the
call itself; in monitor mode the call goes ahead and is reported. SQL `execute` calls have no audit
event in the standard library and are not guarded here.

The hook is installed once per process (audit hooks cannot be removed) and costs one ContextVar read
per audited event outside a guarded request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from cloudward.appsec import detectors

__all__ = ["GuardViolation", "Violation", "guarding", "install", "violation"]

MIN_FRAGMENT = 2  # shorter values are everywhere and steer nothing
_SHELL = (";", "|", "&", "`", "$(", "<", ">", "\n", "\r")
_COMMANDS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"})


class GuardViolation(PermissionError):
    """A call a request value steered, refused by cloudward's runtime guards."""


@dataclass(frozen=True)
class Violation:
    kind: str  # command, file, metadata
    fragment: str  # the request value that steered the call
    detail: str  # the call's argument, cut short


@dataclass(frozen=True)
class _Guarded:
    fragments: tuple[str, ...]
    block: bool
    report: Callable[[Violation, bool], None]  # (violation, blocked)


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


def install() -> None:
    """Add the audit hook to this process (once)."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


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
