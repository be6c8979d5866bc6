"""Running processes (/proc): where each binary runs from, its package, command line, CPU use, miner traits.

Why: a compromised cloud host shows itself first in its process table. TeamTNT and Kinsing run
XMRig (renamed, from /tmp or /dev/shm, often deleted after start or loaded from a memfd), masscan
and zgrab to find the next victim, and tmate for a way back in. The facts here let rules tell
those apart from a normal system: whether a package owns the running binary, whether the binary
still exists, where it runs from, how much CPU it has used over its life and over the last second.

Command lines are stored with secret values masked (`--pass`, `password=`, user:pass@ in URLs);
/proc/PID/environ is never read. Processes that exit while being read are skipped silently.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from cloudward.workload.collectors._proc import (
    TEMP_DIRS,
    Exe,
    Gone,
    Stat,
    cmdline_args,
    listed_pids,
    masked_cmdline,
    namespace,
    pool_ports,
    read_exe,
    read_stat,
    status_fields,
)
from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.shell import shell_traits

LIVE_ONLY = True

DEFAULT_SAMPLE_SECONDS = 1.0  # the short CPU sample, taken for all processes at once

# Names of CPU/GPU miners (binary, comm or argv[0]); the IOC file's `process_name` entries add to it.
MINER_NAMES = frozenset({
    "xmrig", "xmrig-notls", "xmrig-cuda", "xmr-stak", "xmr-stak-cpu", "xmr-stak-rx", "minerd", "cpuminer",
    "cpuminer-multi", "cpuminer-opt", "ccminer", "cgminer", "bfgminer", "ethminer", "nbminer", "t-rex",
    "lolminer", "phoenixminer", "nanominer", "teamredminer", "srbminer", "srbminer-multi", "kdevtmpfsi",
})
SCANNERS = frozenset({"masscan", "zmap", "zgrab", "zgrab2", "pnscan"})
REMOTE_ACCESS = frozenset({"tmate"})

_STRATUM = re.compile(r"stratum\d?\+(?:tcp|ssl|tls)://", re.IGNORECASE)
_URL_OPTIONS = ("-o", "--url", "-url", "--pool")
_MINER_ALGOS = frozenset({"rx/0", "rx/wow", "rx/arq", "rx/graft", "cn/r", "cn/0", "cn/1", "cn/2", "cn/half",
                          "cn-lite/1", "cn-heavy/0", "cryptonight", "randomx", "argon2/chukwa", "kawpow",
                          "ethash", "ghostrider"})
_POOL_DOMAIN = re.compile(r"(?:^|[/@.])(?:supportxmr|minexmr|moneroocean|nanopool|hashvault|c3pool|"
                          r"f2pool|2miners|xmrpool|herominers|unmineable|nicehash|minergate)\.", re.IGNORECASE)
_HOST_PORT = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?[^/\s:@]+:(\d{1,5})/?$", re.IGNORECASE)
# Kernel thread names: no spaces ("kworker/0:1H-events_highpri", "irq/24-ACPI:Ged", "jbd2/sda1-8").
_KERNEL_THREAD_TITLE = re.compile(r"^\[[\w/:.+@-]+\]$")


def miner_markers(args: list[str], ports: frozenset[int]) -> list[str]:
    """Which miner command-line traits these arguments show (argument-level, so `grep stratum`
    is not a miner: a stratum URL only counts as the value of a pool option)."""
    tokens = " ".join(args).split()
    found: list[str] = []

    def mark(name: str) -> None:
        if name not in found:
            found.append(name)

    previous = ""
    for token in tokens:
        low = token.lower()
        option, value = previous, low
        if low.startswith("-") and "=" in low:
            option, value = low.split("=", 1)
        if option in _URL_OPTIONS:
            if _STRATUM.match(value):
                mark("stratum_url")
            elif _POOL_DOMAIN.search(value):
                mark("pool_domain")
            else:
                port = _HOST_PORT.match(value)
                if port and int(port.group(1)) in ports:
                    mark("pool_port_url")
        if low.startswith("--donate-level"):
            mark("donate_level")
        if option in ("-a", "--algo") and value in _MINER_ALGOS:
            mark("mining_algorithm")
        if option == "--coin" and value in ("monero", "xmr"):
            mark("coin_monero")
        if low.startswith(("--cpu-max-threads-hint", "--randomx-1gb-pages", "--max-cpu-usage")):
            mark("miner_tuning_option")
        previous = low if low.startswith("-") and "=" not in low else ""
    return found


def _names(stat: Stat, exe: Exe, args: list[str]) -> set[str]:
    names = {stat.comm.lower()}
    if exe.path and not exe.memfd:
        names.add(os.path.basename(exe.path).lower())
    if args and args[0]:
        first = args[0].split()[0] if args[0].split() else args[0]
        names.add(os.path.basename(first).lower())
    names.discard("")
    return names


def _hidden_parts(path: str) -> tuple[bool, bool]:
    """(a directory of the path starts with '.', the file name itself starts with '.')."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return False, False
    return any(p.startswith(".") for p in parts[:-1]), parts[-1].startswith(".")


def _present_again(pid: int, path: str) -> bool:
    """Is there a file at the deleted executable's path again (inside the process's own root)?"""
    try:
        return os.path.isfile(f"/proc/{pid}/root{path}")
    except OSError:
        return False


class _Clock:
    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK") or 100
        self.uptime = _uptime()
        self.boot = _boot_time()


def _uptime() -> float:
    with open("/proc/uptime", "rb") as handle:
        return float(handle.read(256).split()[0])


def _boot_time() -> float:
    with open("/proc/stat", "rb") as handle:
        for line in handle.read(1 << 20).splitlines():
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return time.time() - _uptime()


def _cpu(facts: dict[str, Any], stat: Stat, clock: _Clock, age: float) -> None:
    facts["age_seconds"] = round(age)
    facts["cpu_seconds"] = round(stat.ticks / clock.hz, 2)
    facts["cpu_lifetime_percent"] = round(100.0 * stat.ticks / clock.hz / age, 1) if age >= 1 else 0.0


def describe(ctx: HostContext, pid: int, stat: Stat, clock: _Clock, own_mnt: str | None) -> dict[str, Any] | None:
    """The facts of one process, or None for a kernel thread. Raises `Gone` if it exits meanwhile."""
    if stat.kernel_thread:
        return None
    exe = read_exe(pid)
    args, truncated = cmdline_args(pid)
    status = status_fields(pid)
    uid = int(status.get("Uid", "-1").split()[0]) if status.get("Uid") else -1
    ports = pool_ports(ctx)
    facts: dict[str, Any] = {
        "pid": pid,
        "ppid": stat.ppid,
        "uid": uid,
        "comm": stat.comm,
        "state": stat.state,
        "argv0": masked_cmdline(args[:1])[:200] if args else "",
        "cmdline": masked_cmdline(args),
        "cmdline_truncated": truncated,
        "exe": exe.path,
        "exe_readable": exe.link is not None,
        "exe_deleted": exe.deleted and not exe.memfd,
        "exe_memfd": exe.memfd,
    }
    mnt = namespace(pid, "mnt")
    in_container = bool(mnt and own_mnt and mnt != own_mnt)
    facts["in_container"] = in_container
    if exe.memfd:
        facts["memfd_name"] = exe.memfd_name
    if exe.path and not exe.memfd:
        facts["exe_in_temp"] = exe.path.startswith(TEMP_DIRS)
        hidden_dir, hidden_name = _hidden_parts(exe.path)
        facts["exe_hidden_dir"] = hidden_dir
        facts["exe_hidden_name"] = hidden_name
        if not in_container:  # the host's package database says nothing about a container's files
            packages = ctx.packages()
            owned = packages.owned(exe.path)
            if owned is not None:
                facts["exe_packaged"] = owned
                if owned:
                    facts["exe_package"] = packages.owner(exe.path) or ""
        if exe.deleted:
            facts["exe_present_again"] = _present_again(pid, exe.path)
            facts["exe_replaced_by_upgrade"] = bool(facts["exe_present_again"] and facts.get("exe_packaged"))
    age = max(clock.uptime - stat.start_ticks / clock.hz, 0.0)
    facts["start_time"] = datetime.fromtimestamp(clock.boot + stat.start_ticks / clock.hz, UTC).isoformat(
        timespec="seconds")
    _cpu(facts, stat, clock, age)

    names = _names(stat, exe, args)
    raw = " ".join(args)
    iocs = ctx.iocs
    facts["miner_name"] = sorted(names & MINER_NAMES)
    facts["miner_markers"] = miner_markers(args, ports)
    facts["ioc_process_name"] = sorted(n for n in names if iocs.get("process_name", n) is not None)
    facts["ioc_hits"] = sorted({i.value for i in iocs.find_in_text(raw)}) if raw else []
    facts["scanner"] = sorted(names & SCANNERS)
    facts["remote_access_tool"] = sorted(names & REMOTE_ACCESS)
    # A shell running a dropper right now (`sh -c "curl … | sh"`): judged on the raw command line.
    traits = shell_traits(raw) if raw else {}
    facts["downloads_and_executes"] = bool(traits.get("downloads_and_executes"))
    facts["base64_pipeline"] = bool(traits.get("base64_pipeline"))
    # A user-space process titled like a kernel thread ("[kworker/0:1]") hides in `ps` output.
    facts["masquerades_kernel_thread"] = bool(args and _KERNEL_THREAD_TITLE.match(args[0].strip()))
    return facts


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    if not ctx.live:
        return
    me = os.getpid()
    sample = float(ctx.options.get("cpu_sample_seconds", DEFAULT_SAMPLE_SECONDS))
    clock = _Clock()
    own_mnt = namespace("self", "mnt")
    started = time.monotonic()
    first: dict[int, Stat] = {}
    for pid in listed_pids():
        if pid == me:
            continue
        try:
            first[pid] = read_stat(pid)
        except Gone:
            continue
        except (OSError, ValueError) as exc:
            ctx.error(f"/proc/{pid}/stat", f"cannot read /proc/{pid}/stat: {exc}")
    described: list[tuple[int, dict[str, Any]]] = []
    for pid, stat in first.items():
        try:
            facts = describe(ctx, pid, stat, clock, own_mnt)
        except Gone:
            continue
        except (OSError, ValueError) as exc:
            ctx.error(f"/proc/{pid}", f"cannot describe process {pid}: {exc}")
            continue
        if facts is not None:
            described.append((pid, facts))
    # The short sample: one wait for every process, not one per process.
    left = sample - (time.monotonic() - started)
    if left > 0:
        time.sleep(left)
    elapsed = max(time.monotonic() - started, 1e-3)
    for pid, facts in described:
        try:
            now = read_stat(pid)
        except (Gone, OSError, ValueError):
            continue  # exited during the sample: it is gone, nothing to report
        if now.start_ticks != first[pid].start_ticks:
            continue  # the PID was reused by another process
        facts["cpu_sample_percent"] = round(100.0 * (now.ticks - first[pid].ticks) / clock.hz / elapsed, 1)
        _cpu(facts, now, clock, max(clock.uptime + elapsed - now.start_ticks / clock.hz, 0.0))
        key = f"{facts['exe'] or facts['comm']}\x1f{facts['argv0'][:200]}"
        path = facts["exe"] if facts["exe"] else f"/proc/{pid}"
        yield HostObservation("process", facts, path=path, key=key)
