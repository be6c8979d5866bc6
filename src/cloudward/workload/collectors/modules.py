"""Kernel modules: configured to load, modprobe install hooks, stray .ko files, and (live) loaded and hidden ones.

Why: a loadable kernel module is the deepest persistence a Linux intruder can reach. TeamTNT ships
an installer for Diamorphine, a public LKM rootkit that hides processes, files and itself; Reptile,
Suterusu, adore-ng and KoviD are its cousins. Their traces on disk: a name in /etc/modules or
modules-load.d so the rootkit comes back at boot, an `install` line in modprobe.d that runs a
command whenever a module is requested, and a compiled `.ko` left in /tmp or a home directory.

On the live system (root `/`, processes allowed) the loaded modules are read from /proc/modules
with their taint flags (O: out of tree, E: unsigned), and Diamorphine's self-hiding is looked for:
it unlinks itself from the kernel's module list (so /proc/modules and lsmod no longer show it) but
leaves its /sys/module/<name> directory. A loadable module's sysfs directory has an `initstate`
file; a built-in module's has none (module_add_modinfo_attrs only runs for loaded modules), so a
`live` initstate without a /proc/modules line is a hidden module. /proc/modules is read again
after listing /sys/module, so a module loaded in between is not mistaken for one; a kernel without
module support (no /proc/modules) is not checked at all.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from typing import Any

from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.shell import hidden_component, in_temp_dir, shell_traits

PROC_MODULES = "/proc/modules"
SYS_MODULE = "/sys/module"
READ = 256 * 1024
MAX_ENTRIES = 2000

LOAD_FILES = ("/etc/modules",)
LOAD_DIRS = ("/etc/modules-load.d", "/run/modules-load.d", "/usr/local/lib/modules-load.d", "/usr/lib/modules-load.d",
             "/lib/modules-load.d")
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d",
                 "/lib/modprobe.d")
KO_SEARCH = ("/tmp", "/var/tmp", "/dev/shm", "/root", "/home", "/usr/local", "/etc", "/opt")  # noqa: S108 - read only
_KO = re.compile(r"\.ko(?:\.(?:xz|gz|zst))?$")
_NOOP = frozenset({"/bin/true", "/bin/false", "/usr/bin/true", "/usr/bin/false", "true", "false"})

# Names of public LKM rootkits (module names as the kernel shows them: `-` becomes `_`). Sources:
# github.com/m0nad/Diamorphine (used by TeamTNT), github.com/f0rb1dd3n/Reptile,
# github.com/mncoppola/suterusu, adore-ng, github.com/carloslack/KoviD. The IOC file's
# `module_name` indicators are added to these.
ROOTKIT_MODULES = frozenset({"diamorphine", "reptile", "reptile_module", "suterusu", "adore", "adore_ng", "kovid"})


def normal(name: str) -> str:
    return name.strip().replace("-", "_").lower()


def _rootkit_names(ctx: HostContext) -> frozenset[str]:
    return ctx.shared("modules.rootkit_names",
                      lambda: ROOTKIT_MODULES | {normal(v) for v in ctx.iocs.values("module_name")})


def _base(ctx: HostContext, name: str, source: str) -> dict[str, Any]:
    return {"name": normal(name), "source": source, "known_rootkit": normal(name) in _rootkit_names(ctx)}


def _read(ctx: HostContext, path: str) -> str | None:
    try:
        return ctx.root.read_text(path, READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        ctx.error(path, f"cannot read {path}: {exc}")
        return None


def _configured(ctx: HostContext) -> Iterator[HostObservation]:
    files = list(LOAD_FILES) + [p for d in LOAD_DIRS for p in ctx.root.glob(d, ".conf")[:500]]
    for path in files:
        text = _read(ctx, path)
        if text is None:
            continue
        for number, line in enumerate(text.split("\n")[:MAX_ENTRIES], 1):
            words = line.split("#", 1)[0].split()
            if not words or words[0].startswith(";") or "\x00" in words[0]:
                continue
            facts = {**_base(ctx, words[0][:256], "load_at_boot"), "parameters": " ".join(words[1:])[:512]}
            yield HostObservation("kernel_module", facts, path=path, line=number, key=f"boot:{path}:{facts['name']}")


def _modprobe(ctx: HostContext) -> Iterator[HostObservation]:
    for path in [p for d in MODPROBE_DIRS for p in ctx.root.glob(d, ".conf")[:500]]:
        text = _read(ctx, path)
        if text is None:
            continue
        for number, line in enumerate(text.split("\n")[:MAX_ENTRIES], 1):
            words = line.split(None, 2)
            if len(words) < 3 or words[0] not in ("install", "remove"):
                continue
            command = words[2].strip()
            program = command.split()[0] if command.split() else ""
            facts = {
                **_base(ctx, words[1][:256], f"modprobe_{words[0]}"),
                "command": command[:1024],
                "noop": program in _NOOP,
                "calls_modprobe": bool(re.search(r"\bmodprobe\b", command)),
                **shell_traits(command),
            }
            yield HostObservation("kernel_module", facts, path=path, line=number,
                                  key=f"{words[0]}:{path}:{facts['name']}")


def _ko_files(ctx: HostContext) -> Iterator[HostObservation]:
    for top in KO_SEARCH:
        for path, info in ctx.root.walk(top, max_depth=6, max_entries=50_000):
            if not _KO.search(path) or not stat.S_ISREG(info.st_mode):
                continue
            stem = _KO.sub("", path.rsplit("/", 1)[1])
            facts = {**_base(ctx, stem, "ko_file"), "file": path, "size": info.st_size,
                     "temp_dir": in_temp_dir(path), "hidden_name": hidden_component(path),
                     "packaged": ctx.packages().owned(path)}
            yield HostObservation("kernel_module", facts, path=path, key=f"ko:{path}")


def parse_proc_modules(text: str) -> dict[str, dict[str, Any]]:
    """{name: facts} of /proc/modules lines: `name size refs deps state address [(taints)]`."""
    found: dict[str, dict[str, Any]] = {}
    for line in text.split("\n"):
        fields = line.split()
        if len(fields) < 5:
            continue
        taint = fields[6].strip("()") if len(fields) > 6 and fields[6].startswith("(") else ""
        found[fields[0]] = {"state": fields[4], "taint": taint, "out_of_tree": "O" in taint, "unsigned": "E" in taint,
                            "proprietary": "P" in taint}
    return found


def _read_proc_modules(proc_modules: str) -> dict[str, dict[str, Any]] | None:
    try:
        with open(proc_modules, "rb") as handle:
            return parse_proc_modules(handle.read(4 * 1024 * 1024).decode("utf-8", "replace"))
    except FileNotFoundError:
        return None  # a kernel without loadable module support


def hidden_modules(proc_modules: str = PROC_MODULES, sys_module: str = SYS_MODULE) -> list[tuple[str, str]]:
    """(name, initstate) of loadable modules present in sysfs but missing from /proc/modules."""
    first = _read_proc_modules(proc_modules)
    if first is None:
        return []
    candidates: list[tuple[str, str]] = []
    for name in sorted(os.listdir(sys_module))[:10_000]:
        if name in first:
            continue
        try:
            with open(os.path.join(sys_module, name, "initstate"), "rb") as handle:
                state = handle.read(64).decode("ascii", "replace").strip()
        except OSError:
            continue  # built into the kernel: no initstate
        candidates.append((name, state))
    if not candidates:
        return []
    second = _read_proc_modules(proc_modules) or {}
    return [(name, state) for name, state in candidates if name not in second and state == "live"]


def _live(ctx: HostContext) -> Iterator[HostObservation]:
    proc_modules, sys_module = PROC_MODULES, SYS_MODULE
    try:
        loaded = _read_proc_modules(proc_modules)
    except OSError as exc:
        ctx.error(proc_modules, f"cannot read {proc_modules}: {exc}")
        return
    if loaded is None:
        return
    for name, info in sorted(loaded.items())[:MAX_ENTRIES]:
        yield HostObservation("kernel_module", {**_base(ctx, name, "loaded"), **info}, path=proc_modules,
                              key=f"loaded:{name}")
    try:
        hidden = hidden_modules(proc_modules, sys_module)
    except OSError as exc:
        ctx.error(sys_module, f"cannot compare {sys_module} with {proc_modules}: {exc}")
        return
    for name, state in hidden:
        facts = {**_base(ctx, name, "hidden"), "initstate": state, "in_sysfs": True, "in_proc_modules": False}
        yield HostObservation("kernel_module", facts, path=f"{sys_module}/{name}", key=f"hidden:{name}")


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    yield from _configured(ctx)
    yield from _modprobe(ctx)
    yield from _ko_files(ctx)
    if ctx.live and ctx.processes:
        yield from _live(ctx)
