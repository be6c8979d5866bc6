"""`cloudward host …`: Workload Security for one machine or an offline root.

Thin, like every command module: validate options, run `cloudward.workload`, then report, store
and gate through `cli/common.py`. Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage
error (a ROOT that is not a directory), 3 the audit failed, 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cloudward.cli.common import (
    EXIT_INTERRUPTED,
    ConfigOption,
    FailOnOption,
    FormatOption,
    NoStoreOption,
    OutputOption,
    RulesOption,
    err_console,
    finish,
    load_all_rules,
    parse_severity,
    resolve_format,
    settings,
)

if TYPE_CHECKING:
    from cloudward.core.scan import ScanResult
    from cloudward.store import FimBaselineInfo
    from cloudward.workload import HostRoot

app = typer.Typer(help="Workload Security: hardening audit, compromise hunt, integrity monitoring, logs.",
                  no_args_is_help=True)

RootArgument = typer.Argument(Path("/"), show_default=True,
                              help="Root of the system to audit: / (this machine, with its live processes) "
                                   "or a mounted snapshot / extracted image.")
OnlyOption = typer.Option(None, "--only", metavar="COLLECTOR",
                          help="Run only this collector (repeatable); see `host collectors`.")
IocsOption = typer.Option(None, "--iocs", metavar="FILE", help="Add the indicators in this YAML file (repeatable).")


AdvisoriesOption = typer.Option(None, "--advisories", metavar="PATH",
                                help="Advisory database to judge the installed packages with (default: "
                                     "<data dir>/advisories.db, built by `cloudward db update`).")


def host_options(root: Path, config: Path | None, advisories: Path | None = None) -> dict[str, Any]:
    """Audit options taken from the store and the configuration: the SSH keys ROOT's FIM baseline
    recorded, so a key added since is reported as new (the TeamTNT backdoor key); and the advisory
    database the installed packages are judged with (`--advisories`, else <data dir>/advisories.db;
    a missing one is reported by the audit, not here)."""
    keys = authorized_keys_baseline(root, config)
    options: dict[str, Any] = {} if keys is None else {"authorized_keys_baseline": sorted(keys)}
    options["advisories"] = str(advisories if advisories is not None
                                else settings(config).resolved_data_dir() / "advisories.db")
    return options


def audit_root(root: Path, rules_dir: list[Path] | None, iocs: list[Path] | None, only: list[str] | None,
               processes: bool, config: Path | None = None, advisories: Path | None = None) -> ScanResult:
    """`host audit`'s work, without the reporting."""
    from cloudward.core.errors import UsageError
    from cloudward.engines.iocs import load_iocs
    from cloudward.workload import HostRoot, run_audit

    try:
        host = HostRoot(root)
    except OSError as exc:
        raise UsageError(f"ROOT {root}: {exc.strerror or exc}") from None
    try:
        indicators = load_iocs(iocs or [])
    except ValueError as exc:
        raise UsageError(f"--iocs: {exc}") from None
    ruleset = load_all_rules(rules_dir)
    try:
        return run_audit(host, ruleset.engine("host"), iocs=indicators, only=list(only or ()), processes=processes,
                         options=host_options(root, config, advisories))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@app.command("audit")
def audit(
    root: Path = RootArgument,
    only: list[str] = OnlyOption,
    processes: bool = typer.Option(True, "--processes/--no-processes",
                                   help="On /, also inspect the live processes and sockets."),
    iocs: list[Path] = IocsOption,
    advisories: Path | None = AdvisoriesOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Hardening audit and compromise hunt of ROOT (default: this machine), and its installed packages
    that have security fixes available (needs `cloudward db update`)."""
    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    result = audit_root(root, rules_dir, iocs, only, processes, config, advisories)
    err_console().print(
        f"host audit: {result.stats.get('observations', 0):,} observations, {len(result.findings):,} "
        f"finding{'s' if len(result.findings) != 1 else ''}, {len(result.errors):,} "
        f"error{'s' if len(result.errors) != 1 else ''}", highlight=False)
    finish(result, format, output, fail_on, config, no_store)


@app.command("collectors")
def collectors() -> None:
    """List the collectors (what `--only` accepts)."""
    import sys

    from cloudward.workload.collectors import all_collectors
    from cloudward.workload.vulns import STEP

    # `packages` is a step after the collectors (advisories, not rules, judge it) that --only accepts too
    lines = {STEP: "Installed packages that have security fixes available (advisory database of "
                   "`cloudward db update`)."}
    for spec in all_collectors():
        doc = sys.modules[spec.collect.__module__].__doc__ or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        lines[spec.name] = f"{'(live only) ' if spec.live_only else ''}{summary}"
    for name, summary in sorted(lines.items()):
        typer.echo(f"{name:<16} {summary}")


# --- file integrity monitoring -----------------------------------------------------------------

fim_app = typer.Typer(help="File integrity monitoring: record a baseline of critical paths, then check or watch "
                           "them for changes.", no_args_is_help=True)
app.add_typer(fim_app, name="fim")

FimRootArgument = typer.Argument(Path("/"), show_default=True,
                                 help="Root of the system: / (this machine) or a mounted snapshot.")
FimPathOption = typer.Option(None, "--path", metavar="PATH",
                             help="Monitor this path instead of the default set (repeatable; a directory covers "
                                  "what is below it; ~/x means x in every home directory). Default: [fim] paths "
                                  "in cloudward.toml, else the built-in set.")
BaselineNameOption = typer.Option("default", "--name", help="Which baseline of ROOT (a root may keep several).")
EXIT_TERMINATED = 0  # SIGTERM: a requested, clean stop


def _host_root(root: Path) -> HostRoot:
    from cloudward.core.errors import UsageError
    from cloudward.workload import HostRoot

    try:
        return HostRoot(root)
    except OSError as exc:
        raise UsageError(f"ROOT {root}: {exc.strerror or exc}") from None


def fim_paths(paths: list[str] | None, config: Path | None) -> list[str]:
    """--path, else `[fim] paths` (+ `extra_paths`) of cloudward.toml, else the built-in set."""
    from cloudward.workload.fim import DEFAULT_PATHS

    if paths:
        return list(paths)
    section = settings(config).fim
    return (list(section.paths) or list(DEFAULT_PATHS)) + list(section.extra_paths)


def _baseline(root: HostRoot, name: str, config: Path | None, entries: bool = True) -> FimBaselineInfo:
    from cloudward.core.errors import UsageError
    from cloudward.store import open_store

    with open_store(settings(config)) as store:
        baseline = store.get_fim_baseline(str(root.path), name, entries=entries)
    if baseline is None:
        label = "" if name == "default" else f" --name {name}"
        raise UsageError(f"no FIM baseline{'' if name == 'default' else ' ' + repr(name)} for {root.path}: "
                         f"record one first with `cloudward host fim baseline {root.path}{label}`")
    return baseline


def authorized_keys_baseline(root: Path, config: Path | None = None, name: str = "default") -> set[str] | None:
    """The SSH key fingerprints recorded by ROOT's FIM baseline, for `host audit`'s ssh_keys collector
    (`options["authorized_keys_baseline"]`); None when ROOT has no baseline."""
    from cloudward.core.errors import StoreError, UsageError

    try:
        return set(_baseline(_host_root(root), name, config, entries=False).authorized_keys)
    except (UsageError, StoreError):  # no baseline, or no usable store: the audit goes on without it
        return None


@fim_app.command("baseline")
def fim_baseline(
    root: Path = FimRootArgument,
    path: list[str] = FimPathOption,
    name: str = BaselineNameOption,
    config: Path | None = ConfigOption,
) -> None:
    """Record the state of ROOT's critical paths (hashes, modes, owners, flags, SSH key fingerprints)."""
    from cloudward.store import open_store
    from cloudward.workload.fim import authorized_keys_fingerprints, snapshot

    host = _host_root(root)
    paths = fim_paths(path, config)
    errors: list[str] = []
    entries = snapshot(host, paths, error=lambda _item, message: errors.append(message))
    keys = authorized_keys_fingerprints(entries)
    with open_store(settings(config)) as store:
        info = store.save_fim_baseline(str(host.path), entries, paths=paths, authorized_keys=keys, name=name)
    for message in errors[:20]:
        err_console().print(f"warning: {message}", highlight=False, markup=False)
    if len(errors) > 20:
        err_console().print(f"warning: … and {len(errors) - 20:,} more", highlight=False)
    typer.echo(f"fim baseline {info.name!r} of {info.root}: {info.entry_count:,} paths, "
               f"{len(info.authorized_keys):,} authorized SSH keys, {len(errors):,} unreadable")


@fim_app.command("check")
def fim_check(
    root: Path = FimRootArgument,
    name: str = BaselineNameOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Compare ROOT with its baseline: every added, removed or changed path is a finding."""
    from cloudward.workload.fim import run_check

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    host = _host_root(root)
    baseline = _baseline(host, name, config)
    result = run_check(host, baseline.entries, baseline.paths, load_all_rules(rules_dir).engine("host"))
    result.stats["baseline"] = {"name": baseline.name, "created": baseline.created.isoformat(),
                                "entries": baseline.entry_count}
    err_console().print(
        f"fim check: {result.stats.get('changes', 0):,} changes since {baseline.created:%Y-%m-%d %H:%M} UTC, "
        f"{len(result.findings):,} finding{'s' if len(result.findings) != 1 else ''}", highlight=False)
    finish(result, format, output, fail_on, config, no_store)


@fim_app.command("keys")
def fim_keys(
    root: Path = FimRootArgument,
    name: str = BaselineNameOption,
    config: Path | None = ConfigOption,
) -> None:
    """Print the SSH key fingerprints ROOT's authorized_keys files held at baseline time."""
    for key in _baseline(_host_root(root), name, config, entries=False).authorized_keys:
        typer.echo(key)


@fim_app.command("list")
def fim_list(config: Path | None = ConfigOption) -> None:
    """List the recorded baselines."""
    from cloudward.store import open_store

    with open_store(settings(config)) as store:
        for info in store.list_fim_baselines():
            typer.echo(f"{info.root}\t{info.name}\t{info.created:%Y-%m-%d %H:%M:%S}\t{info.entry_count} paths")


WATCH_FORMATS = ("table", "jsonl")


@fim_app.command("watch")
def fim_watch(
    root: Path = FimRootArgument,
    name: str = BaselineNameOption,
    format: str = typer.Option("table", "--format", "-f",  # shadows the builtin: the option is --format
                               help="table (one row per finding) or jsonl (one JSON object per line: "
                                    "type finding, rescan, ready or error)."),
    duration: float | None = typer.Option(None, "--duration", min=0.0, help="Stop after this many seconds."),
    max_events: int | None = typer.Option(None, "--max-events", min=1,
                                          help="Stop after this many changes were reported."),
    rules_dir: list[Path] = RulesOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Watch ROOT's monitored paths with inotify and report each change against the baseline at once.

    Ctrl-C stops with exit 130, SIGTERM with exit 0; both record what was found."""
    import json
    import signal
    import sys
    import time

    from cloudward.core.errors import UsageError
    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.workload.audit import host_target
    from cloudward.workload.evaluate import compile_rules, evaluate
    from cloudward.workload.fim import change_observation

    if format not in WATCH_FORMATS:
        raise UsageError(f"--format: unknown format {format!r} (choose from {', '.join(WATCH_FORMATS)})")
    try:
        from cloudward.workload.fim_watch import FimWatcher
    except ImportError as exc:  # inotify_simple is a Linux-only dependency
        raise UsageError(f"fim watch needs Linux inotify: {exc}") from None
    host = _host_root(root)
    baseline = _baseline(host, name, config)
    compiled = compile_rules(load_all_rules(rules_dir).engine("host"))
    target = host_target(host)
    result = ScanResult(kind="fim-watch", targets=[str(host.path)])
    # A watch sees only what changes while it runs: it must never mark other findings fixed.
    result.stats["partial"] = True
    jsonl = format == "jsonl"
    store = None
    if not no_store:
        from cloudward.store import open_store

        store = open_store(settings(config))

    def line(payload: dict[str, Any], text: str, to_err: bool = False) -> None:
        if jsonl:
            sys.stdout.write(json.dumps(payload, default=str) + "\n")
            sys.stdout.flush()
        if to_err or not jsonl:
            stream = sys.stderr if to_err else sys.stdout
            stream.write(text + "\n")
            stream.flush()

    terminated = False

    def on_term(_signum: int, _frame: Any) -> None:
        nonlocal terminated
        terminated = True

    deadline = time.monotonic() + duration if duration is not None else None
    previous = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    changes = 0
    last_record = 0.0
    try:
        watcher = FimWatcher(host, baseline.paths, baseline.entries)
    except OSError as exc:
        signal.signal(signal.SIGTERM, previous)
        raise UsageError(f"cannot start inotify: {exc.strerror or exc}") from None

    def stop() -> bool:
        return terminated or (deadline is not None and time.monotonic() >= deadline)

    events = watcher.events(stop=stop)
    try:
        for event in events:
            if event.kind == "change" and event.change is not None:
                changes += 1
                change = event.change
                found = evaluate(change_observation(change), compiled, target, str(host.path))
                result.findings.extend(found)
                for finding in found:
                    what = change.change + (f" ({', '.join(change.changed)})" if change.changed else "")
                    line({"type": "finding", **finding.to_contract()},
                         f"{finding.detected_at:%H:%M:%S}  {finding.severity.value:<8} {finding.rule_id:<40} "
                         f"{change.path}  {what}")
                if store is not None and found and time.monotonic() - last_record > 2:
                    store.record_scan(result)
                    last_record = time.monotonic()
                if max_events is not None and changes >= max_events:
                    break
            elif event.kind == "rescan":
                paths = event.details.get("paths", 0)
                line({"type": "rescan", "reason": event.message, "paths": paths},
                     f"rescan ({event.message}): compared {paths:,} paths with the baseline", to_err=True)
            elif event.kind == "ready":
                line({"type": "ready", **event.details},
                     f"watching {event.details.get('directories', 0):,} directories for "
                     f"{event.details.get('paths', 0):,} monitored paths of {host.path}", to_err=True)
            elif event.kind == "error":
                result.add_error(str(host.path), event.message, "watch")
                line({"type": "error", "message": event.message}, f"warning: {event.message}", to_err=True)
            if stop():
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        events.close()
        watcher.close()
        signal.signal(signal.SIGTERM, previous)
        result.stats.update(changes=changes, rescans=watcher.rescans)
        result.finish(ScanStatus.CANCELLED if interrupted else ScanStatus.COMPLETED)
        if store is not None:
            try:
                store.record_scan(result)
            finally:
                store.close()
    err_console().print(f"fim watch: {changes:,} change{'s' if changes != 1 else ''}, {len(result.findings):,} "
                        f"finding{'s' if len(result.findings) != 1 else ''}", highlight=False)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_TERMINATED if terminated else 0)


# --- authentication logs -----------------------------------------------------------------------


LogFilesArgument = typer.Argument(None, help="Log files to read (plain or gzip). Default: /var/log/auth.log and "
                                             "/var/log/secure with their rotations, or the journal.")


@app.command("logs")
def logs(
    files: list[Path] = LogFilesArgument,
    threshold: int = typer.Option(10, "--threshold", min=1, max=100_000,
                                  help="Failures from one address that make a brute force ..."),
    window: float = typer.Option(600.0, "--window", min=1.0, help="... within this many seconds."),
    journal: bool | None = typer.Option(None, "--journal/--no-journal",
                                        help="Also read the systemd journal (default: only when no auth log "
                                             "file exists and no FILE is given)."),
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Authentication logs: SSH brute force and guessed passwords, root logins, new accounts, sudo."""
    import shutil

    from cloudward.core.errors import UsageError
    from cloudward.workload.logs import LogOptions, default_files, run_logs

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    if files:
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise UsageError(f"no such log file: {', '.join(missing)}")
        paths = [str(f) for f in files]
        use_journal = bool(journal)
    else:
        paths = default_files()
        use_journal = journal if journal is not None else not paths
    if use_journal and shutil.which("journalctl") is None:
        if journal:
            raise UsageError("--journal: journalctl is not installed here")
        use_journal = False
    if not paths and not use_journal:
        raise UsageError("no auth log here (/var/log/auth.log, /var/log/secure) and no journal: name the files")
    try:
        options = LogOptions(threshold=threshold, window=window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = run_logs(paths, load_all_rules(rules_dir).engine("host"), options=options, journal=use_journal)
    lines = sum(int(item.get("lines", 0)) for item in result.inventory if item.get("kind") == "auth_log")
    err_console().print(
        f"host logs: {len(paths):,} file{'s' if len(paths) != 1 else ''}{' + journal' if use_journal else ''}, "
        f"{lines:,} lines, {len(result.findings):,} finding{'s' if len(result.findings) != 1 else ''}, "
        f"{len(result.errors):,} error{'s' if len(result.errors) != 1 else ''}", highlight=False)
    finish(result, format, output, fail_on, config, no_store)
