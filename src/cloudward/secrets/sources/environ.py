"""Environments of running processes (`/proc/<pid>/environ`) as blobs.

Credentials passed as environment variables (`AWS_SECRET_ACCESS_KEY`, `DATABASE_URL`) are exactly
what TeamTNT-style credential stealers harvest from /proc; this source looks where they look.

Each readable process becomes one blob, one `NAME=value` per line, with the pid, process name
(`/proc/<pid>/comm`, never the command line: arguments can carry secrets themselves and locations
are printed) and owning user in the location. Processes we may not read (other users' processes
when not root) are skipped silently and counted; processes that exit mid-scan likewise.

Note that /proc shows the environment a process was *started* with; later `setenv()` calls are
invisible (as they are to an attacker reading /proc).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cloudward.engines.blobs import (
    Blob,
    ErrorCode,
    MiB,
    SourceError,
    SourceItem,
    SourceStats,
    display,
)

__all__ = ["EnvironOptions", "process_environments", "variable_at"]


@dataclass(frozen=True, slots=True)
class EnvironOptions:
    """`pids=None` means every process; the scanner's own process is skipped unless asked for
    (its environment is inherited from the shell that is scanned anyway)."""

    proc: str = "/proc"
    pids: tuple[int, ...] | None = None
    include_self: bool = False
    max_size: int = 16 * MiB


def process_environments(
    options: EnvironOptions | None = None, stats: SourceStats | None = None
) -> Iterator[SourceItem]:
    """One blob per readable process environment."""
    options = options or EnvironOptions()
    stats = stats if stats is not None else SourceStats()
    for pid in _pids(options, stats):
        if pid == os.getpid() and not options.include_self:
            continue
        yield from _process(pid, options, stats)


def variable_at(location: dict[str, Any], line: int) -> str | None:
    """The variable whose value covers 1-based `line` of an environ blob (values may span lines)."""
    name = None
    for candidate, first in location.get("variables", ()):
        if first > line:
            break
        name = candidate
    return name


def _pids(options: EnvironOptions, stats: SourceStats) -> list[int]:
    if options.pids is not None:
        return sorted(options.pids)
    try:
        names = os.listdir(options.proc)
    except OSError:
        stats.counters["proc_unreadable"] += 1
        return []
    return sorted(int(name) for name in names if name.isdigit())


def _process(pid: int, options: EnvironOptions, stats: SourceStats) -> Iterator[SourceItem]:
    base = os.path.join(options.proc, str(pid))
    try:
        with open(os.path.join(base, "environ"), "rb") as handle:
            data = handle.read(options.max_size + 1)
        owner = os.stat(base).st_uid
    except PermissionError:
        stats.counters["permission_denied"] += 1
        return
    except (FileNotFoundError, ProcessLookupError):
        stats.counters["exited"] += 1
        return
    except OSError:  # e.g. ESRCH on a zombie being reaped
        stats.counters["unreadable"] += 1
        return
    stats.bytes_read += len(data)
    if not data.strip(b"\0"):
        stats.counters["empty_environ"] += 1  # kernel threads, zombies
        return
    comm = _comm(base)
    origin = f"pid {pid} ({comm}) environ"
    truncated = len(data) > options.max_size
    variables = [v for v in data[: options.max_size].split(b"\0") if v]
    names: list[tuple[str, int]] = []
    line = 1
    for variable in variables:
        name = variable.split(b"=", 1)[0].decode("utf-8", "replace")
        names.append((display(name), line))
        line += variable.count(b"\n") + 1
    location: dict[str, Any] = {
        "pid": pid,
        "process": comm,
        "user": _user(owner),
        "uid": owner,
        "variables": names,
    }
    stats.counters["processes"] += 1
    yield stats.note(Blob(origin, None, location, "process", data=b"\n".join(variables) + b"\n"))
    if truncated:
        yield stats.note(
            SourceError(
                origin,
                f"environment larger than {options.max_size} bytes; rest not scanned",
                ErrorCode.TOO_LARGE,
            )
        )


def _comm(base: str) -> str:
    try:
        with open(os.path.join(base, "comm"), "rb") as handle:
            return display(handle.read(64).rstrip(b"\n").decode("utf-8", "replace"))
    except OSError:
        return "?"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
