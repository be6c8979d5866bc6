"""`cloudward network inspect | monitor` and `cloudward network rules check | load`.

Signature inspection of captures and live traffic with Suricata-syntax rules: the built-in rules
for TeamTNT's network behaviour (and those generated from the IOC list), the rule files loaded with
`network rules load`, and `--rules FILE`. A rule that uses an unsupported keyword is skipped with a
warning naming it; a broken rule is an error naming file:line; the other rules still load, and both
are listed in the report's `scan.errors` (stage `rules`).

Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage error (and `rules check` / `rules
load` with a broken rule), 3 the inspection itself failed (no capture could be read), 130 interrupted.
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
    err_console,
    finish,
    parse_severity,
    resolve_format,
    settings,
)
from cloudward.cli.network import app, rules_app

if TYPE_CHECKING:
    from cloudward.core.finding import Finding
    from cloudward.core.scan import ScanResult
    from cloudward.network.inspect import Engine, InspectOptions, Totals

RuleFilesOption = typer.Option(None, "--rules", metavar="FILE",
                               help="Also use the Suricata rules in FILE (repeatable).")
NoBuiltinOption = typer.Option(False, "--no-builtin",
                               help="Leave out the built-in signatures and those generated from the IOC list.")
IocsOption = typer.Option(None, "--iocs", metavar="FILE",
                          help="More indicators (the shape of cloudward/data/iocs.yaml) to turn into signatures.")
VarsOption = typer.Option(None, "--vars", metavar="FILE",
                          help="Rule variables ($HOME_NET, $HTTP_PORTS ...): YAML like suricata.yaml's `vars:`.")
ClassificationOption = typer.Option(None, "--classification", metavar="FILE",
                                    help="More classtypes, in Suricata's classification.config format.")
AllAlertsOption = typer.Option(False, "--all-alerts",
                               help="Report every matching unit (default: one alert per rule per flow).")
NoScansOption = typer.Option(False, "--no-scans",
                             help="Leave out port-scan and sweep detection (counting failed connection attempts).")
DropOption = typer.Option(None, "--drop", metavar="GLOB",
                          help="Also drop on these rules (cloudward id or sid:N glob; repeatable).")
PcapsArgument = typer.Argument(..., metavar="PCAP...", help="pcap or pcapng files (gzip is fine).")
CheckFilesArgument = typer.Argument(None, metavar="[FILE]...", help="Suricata rule files.")
LoadFilesArgument = typer.Argument(None, metavar="[FILE]...", help="Suricata rule files to install.")
RemoveOption = typer.Option(None, "--remove", metavar="NAME", help="Uninstall this rule file (repeatable).")


def _say(text: str) -> None:
    """One line to stderr, never wrapped (scripts grep these lines)."""
    err_console().print(text, highlight=False, markup=False, soft_wrap=True)


def _installed_dir(config: Path | None) -> Path:
    return settings(config).resolved_data_dir() / "network" / "rules"


def _installed(config: Path | None) -> list[Path]:
    folder = _installed_dir(config)
    return sorted(folder.glob("*.rules")) if folder.is_dir() else []


def _options(rules: list[Path] | None, no_builtin: bool, iocs: list[Path] | None, vars_file: Path | None,
             classification: Path | None, all_alerts: bool, config: Path | None,
             no_scans: bool = False) -> InspectOptions:
    from cloudward.core.errors import UsageError
    from cloudward.network.inspect import InspectOptions

    for path in [*(rules or []), *(iocs or []), *([vars_file] if vars_file else []),
                 *([classification] if classification else [])]:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    return InspectOptions(rule_files=[*_installed(config), *(rules or [])], builtin=not no_builtin,
                          ioc_files=list(iocs or []), vars_file=vars_file, classification_file=classification,
                          dedup=not all_alerts, scans=not no_scans)


def _prepare(options: InspectOptions) -> Engine:
    from cloudward.network.inspect import prepare

    engine = prepare(options)
    for problem in engine.loaded.problems:
        _say(str(problem))
    return engine


def _summary(verb: str, totals: Totals, result: ScanResult) -> None:
    rate = totals.bytes * 8 / totals.seconds / 1e6 if totals.seconds > 0 else 0.0
    rules = len({f.rule_id for f in result.findings})
    err_console().print(
        f"network {verb}: {totals.packets:,} packets, {totals.bytes:,} bytes, {totals.flows:,} flows, "
        f"{totals.units:,} units, {totals.alerts:,} alert{'s' if totals.alerts != 1 else ''} "
        f"({rules} rule{'s' if rules != 1 else ''}), {len(result.errors):,} "
        f"error{'s' if len(result.errors) != 1 else ''} in {totals.seconds:.2f} s ({rate:,.1f} Mbit/s)",
        highlight=False, soft_wrap=True)


@app.command("inspect")
def inspect(
    pcaps: list[Path] = PcapsArgument,
    rules: list[Path] = RuleFilesOption,
    no_builtin: bool = NoBuiltinOption,
    iocs: list[Path] = IocsOption,
    vars_file: Path | None = VarsOption,
    classification: Path | None = ClassificationOption,
    all_alerts: bool = AllAlertsOption,
    no_scans: bool = NoScansOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Inspect capture files with the signatures; each alert is a finding located at its flow."""
    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.network.inspect import Totals, inspect_capture, matcher_counts, record_rule_problems

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    engine = _prepare(_options(rules, no_builtin, iocs, vars_file, classification, all_alerts, config, no_scans))
    result = ScanResult(kind="network_inspect")
    record_rule_problems(engine, result)
    totals = Totals()
    matchers = []
    status = ScanStatus.COMPLETED
    try:
        for pcap in pcaps:
            matcher = inspect_capture(pcap, engine, result, totals)
            if matcher is not None:
                matchers.append(matcher)
    except KeyboardInterrupt:
        status = ScanStatus.CANCELLED
    if status is ScanStatus.COMPLETED and not matchers:
        status = ScanStatus.FAILED
    result.stats.update(totals.as_dict(engine, matcher_counts(matchers)))
    result.finish(status)
    _summary("inspect", totals, result)
    finish(result, format, output, fail_on, config, no_store)


@app.command("monitor")
def monitor(
    interface: str = typer.Option(..., "--interface", "-i", metavar="IFACE",
                                  help="Interface to listen on (lo, eth0 ...)."),
    duration: float | None = typer.Option(None, "--duration", min=0.0, metavar="S",
                                          help="Stop after S seconds (default: until Ctrl-C or SIGTERM)."),
    rules: list[Path] = RuleFilesOption,
    no_builtin: bool = NoBuiltinOption,
    iocs: list[Path] = IocsOption,
    vars_file: Path | None = VarsOption,
    classification: Path | None = ClassificationOption,
    all_alerts: bool = AllAlertsOption,
    no_scans: bool = NoScansOption,
    format: str | None = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Inspect live traffic (AF_PACKET; needs root or CAP_NET_RAW). Each alert is printed to stderr
    as it happens; the report is written when monitoring stops (SIGTERM: exit as usual; Ctrl-C: 130)."""
    import signal
    import threading

    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.network.inspect import Totals, matcher_counts, record_rule_problems
    from cloudward.network.inspect import monitor as run_monitor

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    engine = _prepare(_options(rules, no_builtin, iocs, vars_file, classification, all_alerts, config, no_scans))
    result = ScanResult(kind="network_monitor")
    result.stats["partial"] = True  # live traffic shows what happened meanwhile: it fixes nothing
    record_rule_problems(engine, result)
    totals = Totals()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status = ScanStatus.COMPLETED
    matcher = None
    def ready() -> None:
        _say(f"monitoring {interface} with {len(engine.loaded.signatures)} signatures"
             + (f" for {duration:g} s" if duration is not None else " (Ctrl-C to stop)"))

    try:
        matcher = run_monitor(interface, engine, result, totals, duration=duration, stop=stop, on_finding=_live_line,
                              on_ready=ready)
    except KeyboardInterrupt:
        status = ScanStatus.CANCELLED
    finally:
        signal.signal(signal.SIGTERM, previous)
    result.stats.update(totals.as_dict(engine, matcher_counts([matcher] if matcher else [])))
    result.finish(status)
    _summary("monitor", totals, result)
    finish(result, format, output, fail_on, config, no_store)


@app.command("ips")
def ips(
    queue: int = typer.Option(..., "--queue", "-q", min=0, max=65535, metavar="N",
                              help="The NFQUEUE number iptables/nftables send the traffic to judge to."),
    duration: float | None = typer.Option(None, "--duration", min=0.0, metavar="S",
                                          help="Stop after S seconds (default: until Ctrl-C or SIGTERM)."),
    drop: list[str] = DropOption,
    alert_only: bool = typer.Option(False, "--alert-only", help="Drop nothing: alert only (an IDS on the queue)."),
    fail_open: bool = typer.Option(False, "--fail-open",
                                   help="Let the kernel accept packets while the queue is full (default: drop)."),
    rules: list[Path] = RuleFilesOption,
    no_builtin: bool = NoBuiltinOption,
    iocs: list[Path] = IocsOption,
    vars_file: Path | None = VarsOption,
    classification: Path | None = ClassificationOption,
    no_scans: bool = NoScansOption,
    format: str | None = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Inline IPS: judge every packet netfilter queues to NFQUEUE N and drop the flows that match a
    dropping rule (rules with action drop/reject and built-in signatures of high or critical severity;
    --drop adds, --alert-only drops nothing). Needs CAP_NET_ADMIN. Route traffic to it first, e.g.
    `iptables -I INPUT -p tcp --dport 6379 -j NFQUEUE --queue-num 0 --queue-bypass` (and the same with
    --sport for replies); --queue-bypass lets traffic pass when cloudward is not running."""
    import signal
    import threading

    from cloudward.core.errors import UsageError
    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.network.inline import DropPolicy, QueueError, run_inline
    from cloudward.network.inspect import Totals, record_rule_problems

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    engine = _prepare(_options(rules, no_builtin, iocs, vars_file, classification, False, config, no_scans))
    policy = DropPolicy(drop=tuple(drop or ()), alert_only=alert_only)
    result = ScanResult(kind="network_ips")
    result.stats["partial"] = True
    record_rule_problems(engine, result)
    totals = Totals()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status = ScanStatus.COMPLETED

    def ready() -> None:
        _say(f"ips: judging NFQUEUE {queue} with {len(engine.loaded.signatures)} signatures"
             + (" (alert only)" if alert_only else "") + (f" for {duration:g} s" if duration is not None else ""))

    try:
        stats = run_inline(queue, engine, result, totals, policy=policy, fail_open=fail_open, duration=duration,
                           stop=stop, on_finding=_live_line, on_ready=ready)
    except QueueError as exc:
        raise UsageError(f"--queue {queue}: cannot bind the queue ({exc.strerror or exc}); it needs "
                         "CAP_NET_ADMIN and a queue no other process holds") from None
    except KeyboardInterrupt:
        status = ScanStatus.CANCELLED
        stats = None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stats is not None:
        result.stats["ips"] = {"packets": stats.packets, "accepted": stats.accepted, "dropped": stats.dropped,
                               "dropped_flows": stats.dropped_flows, "undecoded": stats.undecoded,
                               "overflows": stats.overflows}
        _say(f"ips: {stats.packets:,} packets, {stats.accepted:,} accepted, {stats.dropped:,} dropped "
             f"({stats.dropped_flows:,} flows)")
    result.stats.update(totals.as_dict(engine, {}))
    result.finish(status)
    _summary("ips", totals, result)
    finish(result, format, output, fail_on, config, no_store)


def _live_line(finding: Finding) -> None:
    where = finding.location
    if "src" in where:  # a signature: its flow
        place = (f"{where.get('proto')} {where.get('src')}:{where.get('sport')} -> "
                 f"{where.get('dst')}:{where.get('dport')}")
    else:  # a scan: its source and what it tried
        place = str(finding.evidence.get("scan", where.get("source")))
    err_console().print(f"{finding.severity.value:<8} {finding.rule_id}  {place}  {finding.title}",
                        highlight=False, markup=False, soft_wrap=True)


def _check_files(files: list[Path], vars_file: Path | None, classification: Path | None,
                 count_builtin: bool) -> tuple[int, int, int]:
    """Parse and compile `files` beside the built-in signatures (so a reused sid is caught); print
    each problem; (rules that load, warnings, errors)."""
    from cloudward.core.errors import UsageError
    from cloudward.network.inspect import InspectOptions

    for path in files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    engine = _prepare(InspectOptions(rule_files=files, vars_file=vars_file, classification_file=classification))
    loaded = engine.loaded
    warnings = sum(1 for p in loaded.problems if p.warning)
    errors = len(loaded.problems) - warnings
    return loaded.user_count + (loaded.builtin_count if count_builtin else 0), warnings, errors


@rules_app.command("check")
def check(
    files: list[Path] = CheckFilesArgument,
    builtin: bool = typer.Option(False, "--builtin", help="Count the built-in signatures (and the IOC ones) too."),
    vars_file: Path | None = VarsOption,
    classification: Path | None = ClassificationOption,
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on warnings (unsupported keywords) too."),
) -> None:
    """Parse and compile rule files: list every rule that would be skipped and why (file:line).

    The built-in signatures are always loaded beside them (a rule reusing one of their sids is
    refused). Exit 0 when every rule loads (or only unsupported ones are skipped, without
    --strict), 2 otherwise."""
    from cloudward.core.errors import UsageError

    if not files and not builtin:
        raise UsageError("name rule files to check, or --builtin")
    loaded, warnings, errors = _check_files(list(files or []), vars_file, classification, count_builtin=builtin)
    _say(f"{loaded} rules load, {warnings} skipped as unsupported, {errors} broken")
    if errors or (strict and warnings):
        raise typer.Exit(2)


@rules_app.command("load")
def load(
    files: list[Path] = LoadFilesArgument,
    vars_file: Path | None = VarsOption,
    classification: Path | None = ClassificationOption,
    force: bool = typer.Option(False, "--force", help="Install even when some rules are broken (they are skipped)."),
    list_installed: bool = typer.Option(False, "--list", help="List the installed rule files and exit."),
    remove: list[str] = RemoveOption,
    config: Path | None = ConfigOption,
) -> None:
    """Install rule files so every `network inspect` and `network monitor` uses them.

    The files are checked first (as `rules check` does) and copied to <data dir>/network/rules/; a
    file with a broken rule is refused unless --force. Installing a file of the same name replaces it."""
    import shutil

    from cloudward.core.errors import UsageError

    folder = _installed_dir(config)
    if list_installed:
        for path in _installed(config):
            typer.echo(str(path))
        return
    if remove:
        for name in remove:
            target = folder / Path(name).name
            if target.suffix != ".rules" or not target.is_file():
                raise UsageError(f"--remove: {name} is not an installed rule file (see --list)")
            target.unlink()
            _say(f"removed {target}")
        return
    if not files:
        raise UsageError("name rule files to install (or --list / --remove NAME)")
    names = [Path(f).name if Path(f).suffix == ".rules" else Path(f).name + ".rules" for f in files]
    if len(set(names)) != len(names):
        raise UsageError("two of the files have the same name; rename one")
    installed = [p for p in _installed(config) if p.name not in names]
    loaded, warnings, errors = _check_files([*installed, *files], vars_file, classification, count_builtin=False)
    if errors and not force:
        err_console().print(f"{errors} broken rule{'s' if errors != 1 else ''}: nothing installed "
                            "(fix them, or --force to install and skip them)", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    folder.mkdir(parents=True, exist_ok=True)
    for source, name in zip(files, names, strict=True):
        shutil.copyfile(source, folder / name)
        _say(f"installed {source} as {folder / name}")
    _say(f"{loaded} rules load ({warnings} skipped as unsupported, {errors} broken)")
