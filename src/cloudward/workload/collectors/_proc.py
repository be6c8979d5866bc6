"""Small, bounded readers of this machine's /proc, shared by the live collectors (processes,
sockets, hidden). Private module (leading underscore): not a collector itself.

Processes come and go while we read: a PID listed a moment ago may be gone by the time its
`stat` is opened. That is normal, so readers raise `Gone` for it and callers skip the process
quietly; only surprises (a malformed `stat`) are worth reporting as errors.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudward.workload.observation import HostContext

PROC = "/proc"
MAX_PIDS = 100_000  # more processes than this and the rest are not described
CMDLINE_READ = 64 * 1024  # the kernel caps what it shows anyway; we read at most this
CMDLINE_KEEP = 2048  # characters of (masked) command line stored as a fact
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread

TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/", "/dev/mqueue/")  # noqa: S108 - we look, not write


class Gone(Exception):
    """The process ended (or was never there) while we were reading it."""


def listed_pids(limit: int = MAX_PIDS) -> list[int]:
    """PIDs as the /proc directory listing shows them (what `ps` sees; a rootkit may edit it)."""
    pids = []
    for name in os.listdir(PROC):
        if name.isdigit():
            pids.append(int(name))
            if len(pids) >= limit:
                break
    return sorted(pids)


def read_proc(pid: int | str, name: str, limit: int = 64 * 1024) -> bytes:
    """At most `limit` bytes of /proc/PID/name; `Gone` when the process is not there."""
    try:
        with open(f"{PROC}/{pid}/{name}", "rb", buffering=0) as handle:
            # /proc files are generated a page or so per read(2): read until EOF or the bound.
            chunks: list[bytes] = []
            left = limit
            while left > 0:
                chunk = handle.read(min(left, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise Gone(str(pid)) from exc
    except OSError as exc:
        if exc.errno == errno.ESRCH:  # reading a file of a process that just exited
            raise Gone(str(pid)) from exc
        raise


@dataclass(frozen=True, slots=True)
class Stat:
    comm: str
    state: str
    ppid: int
    flags: int
    ticks: int  # utime + stime, in clock ticks
    start_ticks: int  # start time after boot, in clock ticks

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


def parse_stat(text: str) -> Stat:
    """/proc/PID/stat; the comm is in parentheses and may itself hold spaces and ')'."""
    open_at, close_at = text.find("("), text.rfind(")")
    if open_at < 0 or close_at < open_at:
        raise ValueError("no (comm) field")
    rest = text[close_at + 1:].split()
    if len(rest) < 20:
        raise ValueError(f"{len(rest) + 2} fields, expected at least 22")
    # rest[0] is field 3 (state) of proc(5); field n is rest[n - 3].
    return Stat(comm=text[open_at + 1:close_at], state=rest[0], ppid=int(rest[1]), flags=int(rest[6]),
                ticks=int(rest[11]) + int(rest[12]), start_ticks=int(rest[19]))


def read_stat(pid: int) -> Stat:
    return parse_stat(read_proc(pid, "stat", 4096).decode("utf-8", "replace"))


def status_fields(pid: int | str) -> dict[str, str]:
    """/proc/PID/status as {field: value}."""
    text = read_proc(pid, "status", 16 * 1024).decode("utf-8", "replace")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def cmdline_args(pid: int) -> tuple[list[str], bool]:
    """argv (NUL-split) and whether it was cut at the read bound."""
    raw = read_proc(pid, "cmdline", CMDLINE_READ)
    truncated = len(raw) >= CMDLINE_READ
    args = raw.rstrip(b"\0").split(b"\0") if raw.strip(b"\0") else []
    return [a.decode("utf-8", "replace") for a in args], truncated


@dataclass(frozen=True, slots=True)
class Exe:
    link: str | None  # what /proc/PID/exe points to, None when it cannot be read
    path: str  # the link without " (deleted)"
    deleted: bool
    memfd: bool

    @property
    def memfd_name(self) -> str:
        return self.path[len("/memfd:"):] if self.memfd else ""


def read_exe(pid: int) -> Exe:
    """The executable of a process. Kernel threads and zombies have none (link "")."""
    try:
        link = os.readlink(f"{PROC}/{pid}/exe")
    except FileNotFoundError:
        if not os.path.exists(f"{PROC}/{pid}"):
            raise Gone(str(pid)) from None
        return Exe("", "", False, False)
    except ProcessLookupError:
        raise Gone(str(pid)) from None
    except OSError:  # EACCES: another user's process (or, in a sandbox, even root's PID 1)
        return Exe(None, "", False, False)
    deleted = link.endswith(" (deleted)")
    path = link[: -len(" (deleted)")] if deleted else link
    return Exe(link, path, deleted, path.startswith("/memfd:"))


def namespace(pid: int | str, kind: str) -> str | None:
    try:
        return os.readlink(f"{PROC}/{pid}/ns/{kind}")
    except OSError:
        return None


# Secrets seen on command lines: values of password-like options and key=value pairs, user:pass@
# in URLs, "...TOKEN": "value" in JSON passed as an argument. Values are replaced, names kept.
_SECRET_WORD = r"(?:pass(?:word|wd|phrase)?|secret|token|api[-_]?key|access[-_]?key|credentials?|pwd)"  # noqa: S105
_SECRET_OPTION = re.compile(rf"^-{{1,2}}[\w.-]*{_SECRET_WORD}[\w.-]*$|^-p$|^-P$", re.IGNORECASE)
_SECRET_ATTACHED = re.compile(rf"^(-{{1,2}}[\w.-]*{_SECRET_WORD}[\w.-]*=|-p(?=.))(.+)$", re.IGNORECASE)
_SECRET_PAIR = re.compile(rf"(\b[\w.-]*{_SECRET_WORD}[\w.-]*\s*[=:]\s*)([^\s&;,'\"]+)", re.IGNORECASE)
_SECRET_JSON = re.compile(rf"(\"[\w.-]*{_SECRET_WORD}[\w.-]*\"\s*:\s*\")([^\"]*)(\")", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)", re.IGNORECASE)
MASK = "***"


def mask_args(args: list[str]) -> list[str]:
    """The command line with secret values replaced by ***; never store the raw one."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        if _SECRET_OPTION.match(arg):
            out.append(arg)
            hide_next = True
            continue
        attached = _SECRET_ATTACHED.match(arg)
        if attached:
            out.append(attached.group(1) + MASK)
            continue
        arg = _SECRET_JSON.sub(lambda m: m.group(1) + MASK + m.group(3), arg)
        arg = _SECRET_PAIR.sub(lambda m: m.group(1) + MASK, arg)
        arg = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), arg)
        out.append(arg)
    return out


def masked_cmdline(args: list[str]) -> str:
    """Masked per argument, then per whitespace word (`exec -a "x --pass s"` puts many in one)."""
    text = " ".join(mask_args(" ".join(mask_args(args)).split()))
    return text if len(text) <= CMDLINE_KEEP else text[:CMDLINE_KEEP] + "…"


# Ports mining pools commonly listen on (XMRig/cpuminer pool configs, TeamTNT and Kinsing reports).
# The IOC file's `pool_port` indicators are added to these; `options["pool_ports"]` replaces them.
DEFAULT_POOL_PORTS = frozenset({3333, 4444, 5555, 6666, 7777, 14433, 14444, 45560, 45700})


def pool_ports(ctx: HostContext) -> frozenset[int]:
    def build() -> frozenset[int]:
        base = ctx.options.get("pool_ports")
        ports = {int(p) for p in base} if base is not None else set(DEFAULT_POOL_PORTS)
        for value in ctx.iocs.values("pool_port"):
            if value.isdigit():
                ports.add(int(value))
        return frozenset(ports)

    return ctx.shared("pool_ports", build)
