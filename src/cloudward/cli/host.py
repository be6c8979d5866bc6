"""`cloudward host …`: Workload Security for one machine or an offline root.

Thin, like every command module: validate options, run `cloudward.workload`, then report, store
and gate through `cli/common.py`. Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage
error (a ROOT that is not a directory), 3 the audit failed, 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloudward.cli.common import (
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
)

if TYPE_CHECKING:
    from cloudward.core.scan import ScanResult

app = typer.Typer(help="Workload Security: hardening audit, compromise hunt, integrity monitoring, logs.",
                  no_args_is_help=True)

RootArgument = typer.Argument(Path("/"), show_default=True,
                              help="Root of the system to audit: / (this machine, with its live processes) "
                                   "or a mounted snapshot / extracted image.")
OnlyOption = typer.Option(None, "--only", metavar="COLLECTOR",
                          help="Run only this collector (repeatable); see `host collectors`.")
IocsOption = typer.Option(None, "--iocs", metavar="FILE", help="Add the indicators in this YAML file (repeatable).")


def audit_root(root: Path, rules_dir: list[Path] | None, iocs: list[Path] | None, only: list[str] | None,
               processes: bool) -> ScanResult:
    """Shared by `host audit` and the top-level `audit`."""
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
        return run_audit(host, ruleset.engine("host"), iocs=indicators, only=list(only or ()), processes=processes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@app.command("audit")
def audit(
    root: Path = RootArgument,
    only: list[str] = OnlyOption,
    processes: bool = typer.Option(True, "--processes/--no-processes",
                                   help="On /, also inspect the live processes and sockets."),
    iocs: list[Path] = IocsOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Hardening audit and compromise hunt of ROOT (default: this machine)."""
    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    result = audit_root(root, rules_dir, iocs, only, processes)
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

    for spec in all_collectors():
        doc = sys.modules[spec.collect.__module__].__doc__ or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        typer.echo(f"{spec.name:<16} {'(live only) ' if spec.live_only else ''}{summary}")
