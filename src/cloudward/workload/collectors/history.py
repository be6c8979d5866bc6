"""Shell history per account: linked to /dev/null, disabled in rc files, fetch-and-run and trace-wiping commands.

Why: the history file is where an intruder's hands show — and so the first thing TeamTNT scripts
silence (`export HISTFILE=/dev/null`, `history -c`, `ln -sf /dev/null ~/.bash_history`; ATT&CK
T1070.003). What is left is still evidence: `curl … | bash` of a dropper, `chattr -i`,
`iptables -F`, `ufw disable`, `setenforce 0`, logs emptied. Each history file (.bash_history,
.zsh_history, .ash_history, .sh_history, .history) is described: whether it is a link to
/dev/null, its size, which rc files disable history for that account, and the commands worth a
look (at most 20 shown, each cut at 300 characters) with their `cloudward.workload.shell` traits
and IOC hits; counts are of distinct commands. Only the last 4 MiB of a history file are read (the newest).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import Any

from cloudward.workload.collectors._homes import Account, accounts
from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.shell import shell_traits

HISTORY_FILES = (".bash_history", ".zsh_history", ".ash_history", ".sh_history", ".history")
RC_FILES = (".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc", ".zprofile", ".zshenv", ".kshrc",
            ".bash_logout")
SYSTEM_RC = ("/etc/profile", "/etc/bash.bashrc", "/etc/zsh/zshrc", "/etc/zsh/zshenv", "/etc/environment")
TAIL_READ = 4 * 1024 * 1024
RC_READ = 256 * 1024
MAX_SHOWN = 20
LINE_KEEP = 300
_NULL = frozenset({"/dev/null", "/dev/zero"})


def read_tail(ctx: HostContext, inner: str, limit: int = TAIL_READ) -> tuple[bytes, bool]:
    """The last `limit` bytes of a regular file inside the root, and whether it was cut."""
    host = ctx.root.resolve(inner)
    fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{inner}: not a regular file")
        start = max(0, info.st_size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if start:
            data = data.split(b"\n", 1)[-1]  # drop the partial first line
        return data, start > 0
    finally:
        os.close(fd)


def _disablers(ctx: HostContext, files: list[str]) -> list[str]:
    found: list[str] = []
    for path in files:
        try:
            text = ctx.root.read_text(path, RC_READ)
        except OSError:
            continue
        for line in text.split("\n"):
            if line.lstrip().startswith("#"):
                continue
            evasion = shell_traits(line[:4096])["evasion"]
            if "history_disabled" in evasion or "history_cleared" in evasion:
                found.append(path)
                break
    return found


def _system_disablers(ctx: HostContext) -> list[str]:
    return ctx.shared("history.system_rc", lambda: _disablers(
        ctx, [*SYSTEM_RC, *ctx.root.glob("/etc/profile.d", ".sh")[:500]]))


def _commands(ctx: HostContext, text: str) -> dict[str, Any]:
    shown: list[dict[str, Any]] = []
    counts = {"download_execute": 0, "base64_pipeline": 0, "runs_from_tmp": 0}
    evasion: list[str] = []
    iocs: set[str] = set()
    seen: set[str] = set()  # histories repeat themselves: each distinct command is judged (and counted) once
    for line in text.split("\n"):
        if line.startswith(": ") and ";" in line[:40]:
            line = line.split(";", 1)[1]  # zsh extended history: ": <time>:<duration>;command"
        if not line.strip() or line.startswith("#") or line in seen:
            continue
        seen.add(line)
        traits = shell_traits(line)
        hits = sorted({ind.value for ind in ctx.iocs.find_in_text(line[:65536])}) if "." in line else []
        flagged = [name for name, key in (("download_execute", "downloads_and_executes"),
                                          ("base64_pipeline", "base64_pipeline"), ("runs_from_tmp", "runs_from_tmp"))
                   if traits[key]]
        for name in flagged:
            counts[name] += 1
        for name in traits["evasion"]:
            if name not in evasion:
                evasion.append(name)
        iocs.update(hits)
        if (flagged or traits["evasion"] or hits) and len(shown) < MAX_SHOWN:
            shown.append({"command": line[:LINE_KEEP], "traits": flagged + traits["evasion"], "ioc_hits": hits})
    return {"download_execute_count": counts["download_execute"], "base64_pipeline_count": counts["base64_pipeline"],
            "runs_from_tmp_count": counts["runs_from_tmp"], "evasion": evasion, "ioc_hits": sorted(iocs),
            "notable_commands": shown}


def _history(ctx: HostContext, account: Account, disabled_by: list[str]) -> Iterator[HostObservation]:
    home = account.home.rstrip("/")
    found = False
    for name in HISTORY_FILES:
        path = f"{home}/{name}"
        try:
            info = ctx.root.lstat(path)
        except OSError:
            continue
        found = True
        facts: dict[str, Any] = {"user": account.name, "uid": account.uid, "file": path,
                                 "history_disabled_in": disabled_by,
                                 "symlink": stat.S_ISLNK(info.st_mode), "link_target": "", "linked_to_dev_null": False,
                                 "size": info.st_size, "empty": False, "truncated_read": False}
        if stat.S_ISLNK(info.st_mode):
            with contextlib.suppress(OSError):
                facts["link_target"] = ctx.root.readlink(path)[:1024]
            facts["linked_to_dev_null"] = facts["link_target"] in _NULL
        elif stat.S_ISREG(info.st_mode):
            facts["empty"] = info.st_size == 0
            try:
                data, cut = read_tail(ctx, path)
            except OSError as exc:
                ctx.error(path, f"cannot read {path}: {exc}")
            else:
                facts["truncated_read"] = cut
                if b"\x00" not in data[:4096]:
                    facts.update(_commands(ctx, data.decode("utf-8", "replace")))
        yield HostObservation("shell_history", facts, path=path, key=f"{account.name}:{path}")
    if not found and disabled_by and account.shell.rsplit("/", 1)[-1] not in ("nologin", "false"):
        facts = {"user": account.name, "uid": account.uid, "file": "", "history_disabled_in": disabled_by,
                 "symlink": False, "link_target": "", "linked_to_dev_null": False, "size": 0, "empty": True,
                 "truncated_read": False}
        yield HostObservation("shell_history", facts, path=disabled_by[0], key=f"{account.name}:no-history")


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    system = _system_disablers(ctx)
    for account in accounts(ctx):
        home = account.home.rstrip("/")
        own = _disablers(ctx, [f"{home}/{name}" for name in RC_FILES])
        yield from _history(ctx, account, system + own)
