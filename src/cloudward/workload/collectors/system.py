"""The system itself: distribution, hostname, kernel.

Inventory for the report, and facts for rules that depend on which distribution a root is."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator

from cloudward.workload.observation import HostContext, HostObservation


def os_release(ctx: HostContext) -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = ctx.root.read_text(path, 64 * 1024)
        except OSError:
            continue
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().isidentifier():
                try:
                    parts = shlex.split(value, comments=False)
                except ValueError:
                    parts = [value.strip().strip("\"'")]
                fields[key.strip()] = parts[0] if parts else ""
        return fields
    return {}


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    release = os_release(ctx)
    facts: dict[str, object] = {
        "distribution": release.get("ID", ""),
        "distribution_like": release.get("ID_LIKE", ""),
        "version": release.get("VERSION_ID", ""),
        "pretty_name": release.get("PRETTY_NAME", ""),
        "live": ctx.live,
    }
    try:
        facts["hostname"] = ctx.root.read_text("/etc/hostname", 4096).strip()
    except OSError:
        facts["hostname"] = ""
    if ctx.live:
        uname = os.uname()
        facts["kernel"] = uname.release
        facts["hostname"] = uname.nodename
    yield HostObservation("host", facts, path="/etc/os-release", key="host")
