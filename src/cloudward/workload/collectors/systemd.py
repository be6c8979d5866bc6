"""Systemd units and drop-ins (system and per-user): what their Exec* lines run, package owner, restart policy.

Why: after cron, a service unit is the favourite persistence of cloud-mining crews — TeamTNT and
Kinsing install units that start a miner or a bot from /tmp or a dot directory with
`Restart=always`, or whose ExecStart fetches a script and pipes it to a shell. Every unit file in the
system and user unit directories (and ~/.config/systemd/user of each account) is described: its
Exec* command lines with the `cloudward.workload.shell` traits, IOC hits, Restart=, whether a
package owns the file, and whether its name looks like a miner's. A directory reached twice
(merged /usr: /lib is /usr/lib) is read once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from cloudward.workload.collectors._homes import accounts
from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.shell import shell_traits

UNIT_READ = 256 * 1024
MAX_UNITS = 5000  # per directory
COMMAND_KEEP = 1024

SYSTEM_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system",
               "/usr/lib/systemd/system", "/etc/systemd/user", "/usr/lib/systemd/user")
_UNIT_SUFFIXES = (".service", ".timer", ".socket", ".path", ".mount", ".target")
_EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload",
              "ExecCondition")
# Miner and bot names seen as unit names in TeamTNT/Kinsing/WatchDog reports (and generic miner words).
_MINER_NAME = re.compile(r"xmr|miner|monero|kdevtmpfsi|kinsing|kthreaddi|dbused|\bsysupdate\b|networkservice|"
                         r"moneroocean|c3pool|nanopool|crypto(?:night)?|tntbot", re.IGNORECASE)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values]}} of a unit file; continuation lines (trailing backslash) joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.split("\n"):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if sep and current is not None:
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _command(value: str) -> str:
    """An Exec value without its systemd prefixes (`-`, `@`, `+`, `!`, `:`)."""
    return value.lstrip("-@+!:")


def _describe(ctx: HostContext, path: str, scope: str, user: str) -> dict[str, Any] | None:
    try:
        raw = ctx.root.read_bytes(path, UNIT_READ)
    except OSError as exc:
        ctx.error(path, f"cannot read unit {path}: {exc}")
        return None
    if b"\x00" in raw[:4096]:
        ctx.error(path, f"{path}: binary content, not a unit file")
        return None
    sections = parse_unit(raw.decode("utf-8", errors="replace"))
    service = sections.get("Service", {})
    commands = [_command(v) for k in _EXEC_KEYS for v in service.get(k, []) if v]
    joined = "\n".join(commands)
    traits = shell_traits(joined)
    name = path.rsplit("/", 1)[1]
    unit = name if not path.rsplit("/", 2)[-2].endswith(".d") else path.rsplit("/", 2)[-2][:-2]
    owned = ctx.packages().owned(path)
    return {
        "unit": unit,
        "file": name,
        "scope": scope,
        "user": user,
        "drop_in": unit != name,
        "type": unit.rsplit(".", 1)[-1] if "." in unit else "",
        "description": (sections.get("Unit", {}).get("Description") or [""])[-1][:200],
        "exec": [c[:COMMAND_KEEP] for c in commands[:20]],
        "restart": (service.get("Restart") or [""])[-1],
        "run_as": (service.get("User") or [""])[-1],
        "timer_unit": (sections.get("Timer", {}).get("Unit") or [""])[-1],
        "on_calendar": (sections.get("Timer", {}).get("OnCalendar") or [""])[-1],
        "package": ctx.packages().owner(path) or "",
        "packaged": owned,
        "miner_like_name": bool(_MINER_NAME.search(unit)),
        "ioc_hits": sorted({ind.value for ind in ctx.iocs.find_in_text(joined)}),
        **traits,
    }


def _unit_files(ctx: HostContext, directory: str) -> Iterator[str]:
    """Unit files of a directory and of its `<unit>.d/` drop-in folders (not .wants/.requires links)."""
    for path in ctx.root.glob(directory)[:MAX_UNITS]:
        name = path.rsplit("/", 1)[1]
        if name.endswith(".d"):
            for drop in ctx.root.glob(path, ".conf")[:100]:
                if ctx.root.is_file(drop):
                    yield drop
        elif name.endswith(_UNIT_SUFFIXES) and ctx.root.is_file(path):
            try:
                if ctx.root.readlink(path):
                    continue  # a link (alias, or masked to /dev/null): its target is described where it lives
            except OSError:
                pass
            yield path


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    seen: set[str] = set()
    places = [(d, "system", "") for d in SYSTEM_DIRS]
    places += [(f"{a.home}/.config/systemd/user", "user", a.name) for a in accounts(ctx)]
    for directory, scope, user in places:
        try:
            real = ctx.root.resolve(directory)
        except OSError:
            continue
        if real in seen:
            continue
        seen.add(real)
        for path in _unit_files(ctx, directory):
            facts = _describe(ctx, path, scope, user)
            if facts is not None:
                yield HostObservation("systemd_unit", facts, path=path, key=f"{scope}:{user}:{path}")
