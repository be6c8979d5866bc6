"""`cloudward exposure scan`: the attacker's-eye view of the hosts you name.

Thin, like every command module: parse and validate options (before any packet is sent), call
`cloudward.exposure.scanner`, then report, store and gate through `cli/common.py`.
Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage or input error, 3 the scan itself
failed, 130 interrupted (the partial report is still written and the scan stored as cancelled).
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
    settings,
)

if TYPE_CHECKING:
    from cloudward.core.config import ExposureSettings, Settings

app = typer.Typer(help="Attacker's-eye exposure scanning of the hosts you name.", no_args_is_help=True)


TargetsArgument = typer.Argument(None, show_default=False,
                                 help="IP addresses, CIDRs (IPv4 or IPv6) and host names.")
InputListOption = typer.Option(None, "-iL", "--input-list", metavar="FILE",
                               help="Read targets from FILE, one per line (# comments).")


def _exposure_settings(conf: Settings, concurrency: int | None, rate: float | None, timeout: float | None,
                       max_hosts: int | None) -> ExposureSettings:
    """The configured exposure settings with command-line overrides, validated the same way."""
    from pydantic import ValidationError

    from cloudward.core.config import ExposureSettings
    from cloudward.core.errors import UsageError

    overrides = {"concurrency": concurrency, "rate": rate, "probe_timeout": timeout, "max_hosts": max_hosts}
    flags = {"concurrency": "--concurrency", "rate": "--rate", "probe_timeout": "--timeout",
             "max_hosts": "--max-hosts"}
    data = conf.exposure.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ExposureSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{flags.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
        raise UsageError(problems) from None


@app.command("scan")
def scan(
    targets: list[str] = TargetsArgument,
    input_list: Path | None = InputListOption,
    ports: str = typer.Option("teamtnt", "--ports", "-p",
                              help="Ports: lists and ranges (22,80,8000-8100; '-' for all) and profiles "
                                   "(teamtnt), combinable."),
    concurrency: int | None = typer.Option(None, "--concurrency",
                                           help="Connections in flight during discovery (default 512)."),
    rate: float | None = typer.Option(None, "--rate", help="New connections per second (0 = unlimited)."),
    timeout: float | None = typer.Option(None, "--timeout", metavar="SECONDS",
                                         help="Per-probe timeout (default 5); a port's whole "
                                              "identification is bounded by 3x this."),
    max_hosts: int | None = typer.Option(None, "--max-hosts",
                                         help="Refuse target sets larger than this (default 65,536)."),
    allow_large_range: bool = typer.Option(False, "--allow-large-range",
                                           help="Scan even when the targets exceed --max-hosts."),
    max_open_per_host: int = typer.Option(256, "--max-open-per-host", min=1,
                                          help="Identify at most this many open ports per host (more "
                                               "means a tarpit or proxy; reported as a scan error)."),
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    distributed: bool = typer.Option(False, "--distributed",
                                     help="Split the scan over `cloudward worker`s (Celery; PostgreSQL store)."),
    broker: str | None = typer.Option(None, "--broker", metavar="URL",
                                      help="With --distributed: the workers' broker (or CLOUDWARD_BROKER_URL)."),
    config: Path | None = ConfigOption,
) -> None:
    """Find exposed services (Docker API, Redis, kubelet, etcd, SSH...) and judge them by the rules."""
    from cloudward.exposure.scanner import prepare
    from cloudward.exposure.scanner import scan as run_scan
    from cloudward.exposure.targets import parse_targets

    # Everything that can be wrong with the command line fails here, before a packet is sent.
    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    conf = settings(config)
    exposure = _exposure_settings(conf, concurrency, rate, timeout, max_hosts)
    parsed = parse_targets(targets or [], input_list, max_hosts=exposure.max_hosts,
                           allow_large=allow_large_range)
    parsed, port_list = prepare(parsed, ports, exposure)
    err_console().print(
        f"exposure scan: {parsed.size:,} host{'s' if parsed.size != 1 else ''} x {len(port_list):,} "
        f"port{'s' if len(port_list) != 1 else ''}", highlight=False)

    if distributed:
        from cloudward.cli.worker import distributed_scan

        result = distributed_scan(conf, targets or [], input_list, ports=ports, concurrency=concurrency, rate=rate,
                                  timeout=timeout, max_hosts=max_hosts, allow_large_range=allow_large_range,
                                  max_open_per_host=max_open_per_host, fail_on=fail_on, rules=rules_dir,
                                  no_store=no_store, broker=broker)
        finish(result, format, output, fail_on, config, no_store=True)  # the workers stored it
        return
    ruleset = load_all_rules(rules_dir)
    result = run_scan(parsed, port_list, exposure, ruleset, max_open_per_host=max_open_per_host)

    finish(result, format, output, fail_on, config, no_store)
