"""Accounts and home directories from the root's /etc/passwd, shared by the persistence collectors
(ssh_keys, history, systemd user units). Private module (leading underscore): not a collector.

A hostile passwd may be huge or hold garbage lines: it is read bounded, lines that are not seven
colon-separated fields are skipped, and homes are inner paths (never the auditing machine's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudward.workload.observation import HostContext

MAX_USERS = 5000
_PASSWD_READ = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    home: str
    shell: str


def accounts(ctx: HostContext) -> list[Account]:
    """Accounts with an absolute home, root's /root always included; one entry per home."""

    def build() -> list[Account]:
        found: list[Account] = []
        homes: set[str] = set()
        try:
            text = ctx.root.read_text("/etc/passwd", _PASSWD_READ)
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            ctx.error("/etc/passwd", f"cannot read /etc/passwd: {exc}")
            text = ""
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) != 7 or not fields[2].isdigit():
                continue
            home = fields[5].rstrip("/") or "/"
            if not home.startswith("/") or home in homes or home in ("/", "/nonexistent"):
                continue
            homes.add(home)
            found.append(Account(fields[0], int(fields[2]), home, fields[6]))
            if len(found) >= MAX_USERS:
                break
        if "/root" not in homes:
            found.insert(0, Account("root", 0, "/root", "/bin/sh"))
        return found

    return ctx.shared("persistence.accounts", build)
