"""Auth log summary (last MBs of auth.log/secure): SSH brute force, guessed passwords, new accounts, sudo.

The audit reads only the end of /var/log/auth.log and /var/log/secure of the root (the last
`options["auth_log_tail_mb"]` MiB, default 32), streaming, so a huge log costs bounded time and
memory; `cloudward host logs` reads whole files, rotated ones and the journal. The parsing and the
observations (`auth_source`, `auth_login`, `sudo_user`, `auth_event`, `auth_log`) are those of
`cloudward.workload.logs`; rules/logs.yaml judges them.
"""

from __future__ import annotations

from collections.abc import Iterator

from cloudward.workload.logs import DEFAULT_FILES, AuthLogAnalyzer, LogOptions, analyze_file
from cloudward.workload.observation import HostContext, HostObservation

DEFAULT_TAIL_MB = 32


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    tail_mb = ctx.options.get("auth_log_tail_mb", DEFAULT_TAIL_MB)
    try:
        options = LogOptions(tail_bytes=int(float(tail_mb) * 1024 * 1024),
                             threshold=int(ctx.options.get("brute_force_threshold", 10)),
                             window=float(ctx.options.get("brute_force_window", 600)))
    except (TypeError, ValueError) as exc:
        ctx.error("auth logs", f"invalid log options: {exc}")
        return
    analyzer = AuthLogAnalyzer(options)
    for path in DEFAULT_FILES:
        try:
            host = ctx.root.resolve(path)
        except OSError as exc:
            ctx.error(path, f"cannot resolve {path}: {exc.strerror or exc}")
            continue
        if not ctx.root.exists(path):
            continue
        analyze_file(analyzer, path, host, ctx.error)
    yield from analyzer.observations()
