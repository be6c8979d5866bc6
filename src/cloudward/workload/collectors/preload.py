"""Libraries forced into every process: /etc/ld.so.preload entries and LD_PRELOAD in /etc/environment and profile.d.

Why: a line in /etc/ld.so.preload makes the dynamic loader map that library into every program
started afterwards. TeamTNT installs libprocesshider this way (a tiny .so that filters readdir() so
`ps` and `top` stop showing the miner), and other userland rootkits (Azazel, Jynx, Father) use the
same hook. Stock distributions ship no /etc/ld.so.preload at all. Each entry is described: where it
points, whether that file exists in the root, which package owns it, and whether it lives in a
temporary directory or has a hidden (dot) name. LD_PRELOAD set for every login shell is described
the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.shell import hidden_component, in_temp_dir

PRELOAD_FILE = "/etc/ld.so.preload"
READ = 256 * 1024
MAX_ENTRIES = 200
# Public LD_PRELOAD rootkit projects: libprocesshider (TeamTNT's choice), Azazel, Jynx, bdvl, Vlany, BEURK.
_ROOTKIT_NAME = re.compile(r"processhider|azazel|jynx|bdvl|vlany|beurk", re.IGNORECASE)
_LD_PRELOAD = re.compile(r"(?:^|[\s;])(?:export\s+)?LD_PRELOAD\s*=\s*[\"']?([^\"'\n;]*)")


def _entry_facts(ctx: HostContext, path: str, source: str) -> dict[str, Any]:
    base = path.rsplit("/", 1)[-1]
    exists = ctx.root.exists(path) if path.startswith("/") else False
    return {
        "source": source,
        "library": path,
        "exists": exists,
        "package": ctx.packages().owner(path) or "",
        "packaged": ctx.packages().owned(path),
        "temp_dir": in_temp_dir(path),
        "hidden_name": hidden_component(path),
        "usr_local": path.startswith("/usr/local/"),
        "relative": not path.startswith("/"),
        "known_rootkit_name": bool(_ROOTKIT_NAME.search(base)),
    }


def _preload_file(ctx: HostContext) -> Iterator[HostObservation]:
    try:
        text = ctx.root.read_text(PRELOAD_FILE, READ)
    except FileNotFoundError:
        return
    except OSError as exc:
        ctx.error(PRELOAD_FILE, f"cannot read {PRELOAD_FILE}: {exc}")
        return
    count = 0
    for number, line in enumerate(text.split("\n"), 1):
        # ld.so(8): entries are separated by whitespace or colons; `#` starts a comment.
        for path in re.split(r"[\s:]+", line.split("#", 1)[0]):
            if not path or "\x00" in path:
                continue
            facts = _entry_facts(ctx, path[:4096], "ld.so.preload")
            yield HostObservation("ld_preload", facts, path=PRELOAD_FILE, line=number,
                                  key=f"ld.so.preload:{path[:512]}")
            count += 1
            if count >= MAX_ENTRIES:
                return


def _environment(ctx: HostContext) -> Iterator[HostObservation]:
    files = ["/etc/environment", "/etc/profile", "/etc/bash.bashrc", *ctx.root.glob("/etc/profile.d", ".sh")[:500]]
    for inner in files:
        try:
            text = ctx.root.read_text(inner, READ)
        except FileNotFoundError:
            continue
        except OSError as exc:
            ctx.error(inner, f"cannot read {inner}: {exc}")
            continue
        for number, line in enumerate(text.split("\n"), 1):
            if line.lstrip().startswith("#"):
                continue
            match = _LD_PRELOAD.search(line[:4096])
            if not match:
                continue
            for path in re.split(r"[\s:]+", match.group(1)):
                if path:
                    facts = _entry_facts(ctx, path, "environment")
                    yield HostObservation("ld_preload", facts, path=inner, line=number, key=f"env:{inner}:{path[:512]}")


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    yield from _preload_file(ctx)
    yield from _environment(ctx)
