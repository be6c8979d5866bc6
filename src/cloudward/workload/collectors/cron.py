"""Cron jobs (system crontab, cron.d, user spools, anacrontab, cron.daily & co.) with what each command does.

Why: cron is the first persistence TeamTNT, Kinsing and WatchDog set up — a `*/5 * * * *` line that
fetches a script and pipes it to sh, often written through an unauthenticated Redis (`CONFIG SET dir
/var/spool/cron/crontabs`), which leaves Redis's dump header around the line. Each entry is described
(schedule, user, command, file, line) with derived facts from `cloudward.workload.shell`
(downloads_and_executes, base64_pipeline, runs_from_tmp, evasion), IOC hits, `every_minute`, and
`file_written_by_redis` when the file starts with a Redis RDB header. Scripts in /etc/cron.hourly …
monthly are one observation each, judged on their whole text, with their package owner.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.shell import shell_traits

CRONTAB_READ = 2 * 1024 * 1024  # a crontab bigger than this is read this far
SCRIPT_READ = 1024 * 1024
MAX_FILES = 2000  # per directory
MAX_ENTRIES = 5000  # per file
COMMAND_KEEP = 2048  # characters of command stored as a fact

_SYSTEM_TABLES = ("/etc/crontab",)
_SYSTEM_DIRS = ("/etc/cron.d",)
_USER_DIRS = ("/var/spool/cron/crontabs", "/var/spool/cron")  # Debian, then RHEL/Alpine
_SCRIPT_DIRS = {"/etc/cron.hourly": "hourly", "/etc/cron.daily": "daily", "/etc/cron.weekly": "weekly",
                "/etc/cron.monthly": "monthly"}
_NOT_USER_TABLES = frozenset({"crontabs", "atjobs", "atspool", "lastrun", "cron.allow", "cron.deny"})
_NICKNAMES = frozenset({"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_NUMERIC_FIELD = re.compile(r"^[0-9*/,\-~]+$")  # minute, hour, day of month
_NAMED_FIELD = re.compile(r"^(?:[0-9*/,\-~]|[A-Za-z]{3})+$")  # month, day of week ("jan", "mon-fri")
_ENV = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_REDIS_HEADER = re.compile(rb"^REDIS\d{4}")


def _split(line: str, count: int) -> list[str] | None:
    parts = line.split(None, count)
    return parts if len(parts) == count + 1 else None


def parse_line(line: str, system: bool) -> tuple[str, str | None, str] | None:
    """(schedule, user or None, command) of one crontab line; None for comments, env lines, garbage."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "\x00" in stripped or _ENV.match(stripped):
        return None
    if stripped.startswith("@"):
        parts = _split(stripped, 2 if system else 1)
        if parts is None or (parts[0].lower() not in _NICKNAMES and parts[0].lower() != "@every_minute"):
            return None
        return (parts[0], parts[1] if system else None, parts[-1])
    parts = _split(stripped, 6 if system else 5)
    if parts is None or not all(_NUMERIC_FIELD.match(f) for f in parts[:3]) or \
            not all(_NAMED_FIELD.match(f) for f in parts[3:5]):
        return None
    return (" ".join(parts[:5]), parts[5] if system else None, parts[-1])


def _every_minute(schedule: str) -> bool:
    fields = schedule.split()
    return schedule.lower() == "@every_minute" or (len(fields) == 5 and fields[0] in ("*", "*/1") and fields[1] == "*")


def _facts(ctx: HostContext, command: str) -> dict[str, Any]:
    traits = shell_traits(command)
    traits["ioc_hits"] = sorted({ind.value for ind in ctx.iocs.find_in_text(command[:SCRIPT_READ])})
    return traits


def _key(path: str, user: str | None, command: str) -> str:
    digest = hashlib.sha256(command.encode("utf-8", "replace")).hexdigest()[:16]
    return f"{path}:{user or ''}:{digest}"


def _table(ctx: HostContext, path: str, kind: str, owner: str | None) -> Iterator[HostObservation]:
    try:
        raw = ctx.root.read_bytes(path, CRONTAB_READ)
    except FileNotFoundError:
        return
    except OSError as exc:
        ctx.error(path, f"cannot read crontab {path}: {exc}")
        return
    by_redis = bool(_REDIS_HEADER.match(raw))
    text = raw.decode("utf-8", errors="replace")
    system = kind == "system"
    count = 0
    for number, line in enumerate(text.split("\n"), 1):
        parsed = parse_line(line, system)
        if parsed is None:
            continue
        schedule, user, command = parsed
        user = user if system else owner
        facts: dict[str, Any] = {
            "kind": kind,
            "schedule": schedule,
            "user": user or "",
            "command": command[:COMMAND_KEEP],
            "command_truncated": len(command) > COMMAND_KEEP,
            "every_minute": _every_minute(schedule),
            "reboot": schedule.lower() == "@reboot",
            "file_written_by_redis": by_redis,
            "file_truncated": len(raw) >= CRONTAB_READ,
            **_facts(ctx, command),
        }
        yield HostObservation("cron_entry", facts, path=path, line=number, key=_key(path, user, command))
        count += 1
        if count >= MAX_ENTRIES:
            ctx.error(path, f"{path}: more than {MAX_ENTRIES} cron entries, the rest were not read")
            return


def _anacrontab(ctx: HostContext) -> Iterator[HostObservation]:
    path = "/etc/anacrontab"
    try:
        text = ctx.root.read_text(path, CRONTAB_READ)
    except FileNotFoundError:
        return
    except OSError as exc:
        ctx.error(path, f"cannot read {path}: {exc}")
        return
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or _ENV.match(stripped) or "\x00" in stripped:
            continue
        parts = _split(stripped, 3)
        if parts is None:
            continue
        period, delay, job, command = parts
        facts: dict[str, Any] = {"kind": "anacron", "schedule": f"{period} {delay}", "user": "root", "job": job,
                                 "command": command[:COMMAND_KEEP], "command_truncated": len(command) > COMMAND_KEEP,
                                 "every_minute": False, "reboot": False, "file_written_by_redis": False,
                                 "file_truncated": False, **_facts(ctx, command)}
        yield HostObservation("cron_entry", facts, path=path, line=number, key=_key(path, "root", command))


def _scripts(ctx: HostContext) -> Iterator[HostObservation]:
    for directory, period in _SCRIPT_DIRS.items():
        for path in ctx.root.glob(directory)[:MAX_FILES]:
            name = path.rsplit("/", 1)[1]
            if name == ".placeholder":
                continue
            try:
                if not ctx.root.is_file(path):
                    continue
                raw = ctx.root.read_bytes(path, SCRIPT_READ)
            except OSError as exc:
                ctx.error(path, f"cannot read cron script {path}: {exc}")
                continue
            text = raw.decode("utf-8", errors="replace")
            owner = ctx.packages().owner(path)
            facts: dict[str, Any] = {
                "kind": "script", "schedule": period, "user": "root", "command": path,
                "command_truncated": False, "every_minute": False, "reboot": False,
                "file_written_by_redis": bool(_REDIS_HEADER.match(raw)), "file_truncated": len(raw) >= SCRIPT_READ,
                "package": owner or "", "packaged": ctx.packages().owned(path),
                "binary": b"\x00" in raw[:4096], **_facts(ctx, "" if b"\x00" in raw[:4096] else text),
            }
            yield HostObservation("cron_entry", facts, path=path, key=f"{path}:script")


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    for path in _SYSTEM_TABLES:
        yield from _table(ctx, path, "system", None)
    for directory in _SYSTEM_DIRS:
        for path in ctx.root.glob(directory)[:MAX_FILES]:
            if path.rsplit("/", 1)[1] == ".placeholder":
                continue
            yield from _table(ctx, path, "system", None)
    for directory in _USER_DIRS:
        for path in ctx.root.glob(directory)[:MAX_FILES]:
            name = path.rsplit("/", 1)[1]
            if name in _NOT_USER_TABLES or name.startswith("."):
                continue
            try:
                if ctx.root.is_dir(path):
                    continue
            except OSError:
                continue
            yield from _table(ctx, path, "user", name)
    yield from _anacrontab(ctx)
    yield from _scripts(ctx)
