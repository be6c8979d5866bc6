"""Processes hidden from the /proc listing: PIDs that exist but `ps` cannot see (rootkits).

Why: TeamTNT hides its miner with libprocesshider (an `/etc/ld.so.preload` library that filters
`readdir` on /proc) or the Diamorphine kernel module (which filters `getdents`). Both edit the
directory *listing*; neither stops the kernel from answering about the PID itself. So every PID up
to `pid_max` is probed with `kill(pid, 0)` (no signal is sent), and a PID that answers but is not
in the listing is re-checked: its /proc/PID/status must be readable when opened directly, it must
be a process and not a thread (threads are reachable as /proc/TID but never listed: Tgid != TID),
and it must still be missing from two fresh listings. A process that starts or exits during the
sweep fails one of those checks, so the race does not produce a finding.

The sweep costs about a microsecond per PID: ~0.05 s for the default pid_max of 32768, a few
seconds for 4194304 (`options["hidden_pid_limit"]` caps it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cloudward.workload.collectors._proc import (
    Gone,
    cmdline_args,
    listed_pids,
    masked_cmdline,
    read_exe,
    status_fields,
)
from cloudward.workload.observation import HostContext, HostObservation

LIVE_ONLY = True

PID_LIMIT = 4_194_304  # PID_MAX_LIMIT on 64-bit kernels
MAX_CANDIDATES = 200_000  # threads are candidates until checked; more than this is not plausible


def pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as handle:
            return int(handle.read(64).strip())
    except (OSError, ValueError):
        return 32768


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone we may not signal
        return True
    except OSError:
        return False
    return True


def _is_process(pid: int) -> bool:
    """Readable directly as /proc/PID/status, and a thread-group leader (not a thread)."""
    try:
        return status_fields(pid).get("Tgid") == str(pid)
    except (Gone, OSError):
        return False


def find_hidden(listed: Callable[[], Iterable[int]] = listed_pids, limit: int | None = None) -> list[int]:
    """PIDs that exist but are absent from `listed()` (the /proc listing; a seam for tests)."""
    top = min(pid_max(), limit if limit is not None else PID_LIMIT)
    visible = set(listed())
    candidates = []
    for pid in range(1, top + 1):
        if pid not in visible and _alive(pid):
            candidates.append(pid)
            if len(candidates) >= MAX_CANDIDATES:
                break
    candidates = [pid for pid in candidates if _is_process(pid)]
    for _ in range(2):  # two fresh listings: a process that just started shows up in them
        if not candidates:
            break
        visible = set(listed())
        candidates = [pid for pid in candidates if pid not in visible and _alive(pid) and _is_process(pid)]
    return candidates


def describe(pid: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"pid": pid, "probe": "kill(pid, 0) and /proc/PID/status"}
    try:
        status = status_fields(pid)
        facts["comm"] = status.get("Name", "")
        facts["ppid"] = int(status.get("PPid", "0") or 0)
        facts["uid"] = int((status.get("Uid") or "-1").split()[0])
        exe = read_exe(pid)
        facts["exe"] = exe.path
        facts["exe_deleted"] = exe.deleted
        args, _ = cmdline_args(pid)
        facts["cmdline"] = masked_cmdline(args)
    except (Gone, OSError, ValueError):
        pass
    return facts


def collect(ctx: HostContext, listed: Callable[[], Iterable[int]] = listed_pids) -> Iterator[HostObservation]:
    """`listed` is the /proc listing; tests replace it to stand in for a rootkit's filtered one."""
    if not ctx.live:
        return
    limit = ctx.options.get("hidden_pid_limit")
    for pid in find_hidden(listed, limit=int(limit) if limit is not None else None):
        facts = describe(pid)
        who = facts.get("exe") or facts.get("comm") or str(pid)
        yield HostObservation("hidden_process", facts, path=f"/proc/{pid}", key=f"hidden {who}")
