"""`cloudward conformity scan aws` (the account posture scan), `cloudward conformity watch --queue URL`
(real time, from CloudTrail events) and `cloudward conformity report --framework cis-aws` (per-control
pass / fail / not scored).

Thin: open the session, run the collectors, judge with the `aws` rules, then report, store and gate
through `cli/common.py`. Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage error (bad
option, no credentials, role not assumable), 3 every service failed, 130 interrupted. `watch` runs
until stopped: 0 on SIGTERM or when `--once` drained the queue, 130 on Ctrl-C, 2 when the queue
cannot be read at start, 3 when it stops being readable under `--once`.
"""

from __future__ import annotations

import sys
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
    record,
    resolve_format,
    settings,
)

if TYPE_CHECKING:
    from cloudward.conformity.aws.model import UnitResult

InputOption = typer.Option(None, "--input", metavar="FILE",
                           help="A cloudward/v1 JSON report of `conformity scan aws` (default: the latest AWS scan "
                           "in the findings store).")
ReportFormatOption = typer.Option(None, "--format", "-f", help="table or json (default: table on a terminal, "
                                  "json otherwise).")

app = typer.Typer(help="Cloud account posture (AWS) and compliance reports.", no_args_is_help=True)
scan_app = typer.Typer(help="Scan a cloud account's configuration.", no_args_is_help=True)
app.add_typer(scan_app, name="scan")


@scan_app.command("aws")
def scan_aws(
    regions: str | None = typer.Option(None, "--regions", metavar="all|R1,R2",
                                       help="Regions to scan: `all` (every enabled region) or a comma-separated "
                                       "list (default: the session's region)."),
    region: str | None = typer.Option(None, "--region", envvar="AWS_DEFAULT_REGION",
                                      help="Home region: where global services (IAM, S3) are asked."),
    profile: str | None = typer.Option(None, "--profile", envvar="AWS_PROFILE", help="Named profile to use."),
    assume_role: str | None = typer.Option(None, "--assume-role", metavar="ARN",
                                           help="Assume this role (STS) and scan its account."),
    external_id: str | None = typer.Option(None, "--external-id", help="ExternalId for --assume-role."),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", metavar="URL", envvar="AWS_ENDPOINT_URL",
                                            help="Send every API call here (moto, LocalStack, a proxy)."),
    services: str | None = typer.Option(None, "--services", metavar="S1,S2",
                                        help="Services to collect (default all): ec2, iam, s3, cloudtrail, guardduty, "
                                        "config, kms, lambda, ecr, eks, rds."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=64,
                                    help="(service, region) collections run at once."),
    retry_mode: str = typer.Option("standard", "--retry-mode", help="botocore retry mode: standard or adaptive "
                                   "(client-side rate limiting)."),
    max_attempts: int = typer.Option(10, "--max-attempts", min=1, max=50,
                                     help="Attempts per API call, retries of throttling included."),
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Collect each service once per region (read-only calls), then judge every resource with the
    `aws` rules. A service that cannot be read is reported as an error naming the permission it
    needed; the others' findings are kept."""
    from cloudward.conformity.aws.scan import Judge, collect_account, parse_services, resolve_regions, to_result
    from cloudward.conformity.aws.session import SessionOptions, open_session
    from cloudward.core.scan import ScanResult

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    chosen = parse_services(services)
    judge = Judge(load_all_rules(list(rules_dir or [])))
    session = open_session(SessionOptions(profile=profile, assume_role=assume_role, external_id=external_id,
                                          endpoint_url=endpoint_url, region=region, retry_mode=retry_mode,
                                          max_attempts=max_attempts))
    scanned_regions = resolve_regions(session, regions)
    console = err_console()

    def progress(unit: UnitResult) -> None:
        for error in unit.errors:
            console.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)

    result = ScanResult(kind="conformity-aws")
    account = collect_account(session, scanned_regions, chosen, concurrency=concurrency, on_unit=progress)
    to_result(account, judge, result)
    stats = result.stats
    console.print(f"conformity aws: account {stats['account']}, {len(scanned_regions)} region(s), "
                  f"{len(chosen)} service(s), {stats['resources']:,} resources, {stats['api_calls']:,} API calls, "
                  f"{len(result.findings):,} findings, {len(result.errors):,} errors in {stats['seconds']:.1f}s",
                  highlight=False)
    finish(result, format, output, fail_on, config, no_store)


@app.command("watch")
def watch(
    queue: str = typer.Option(..., "--queue", metavar="URL", show_default=False,
                              help="SQS queue receiving CloudTrail management events (EventBridge rule on "
                              "`AWS API Call via CloudTrail`, raw CloudTrail records or SNS-wrapped ones)."),
    regions: str | None = typer.Option(None, "--regions", metavar="R1,R2",
                                       help="Regions whose CloudTrail coverage is re-judged when a trail changes "
                                       "(default: the session's region). Events of any region are handled."),
    once: bool = typer.Option(False, "--once", help="Drain the queue, then exit (tests, cron)."),
    region: str | None = typer.Option(None, "--region", envvar="AWS_DEFAULT_REGION",
                                      help="Home region: where global services (IAM, S3) are asked."),
    profile: str | None = typer.Option(None, "--profile", envvar="AWS_PROFILE", help="Named profile to use."),
    assume_role: str | None = typer.Option(None, "--assume-role", metavar="ARN",
                                           help="Assume this role (STS) and watch its account."),
    external_id: str | None = typer.Option(None, "--external-id", help="ExternalId for --assume-role."),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", metavar="URL", envvar="AWS_ENDPOINT_URL",
                                            help="Send every API call here (moto, LocalStack, a proxy)."),
    sqs_endpoint_url: str | None = typer.Option(None, "--sqs-endpoint-url", metavar="URL",
                                                envvar="AWS_ENDPOINT_URL_SQS",
                                                help="SQS endpoint, when not the same (default: --endpoint-url)."),
    max_attempts: int = typer.Option(5, "--max-attempts", min=1, max=1000,
                                     help="Receives of a message whose re-collection keeps failing before it is "
                                     "left to the queue's RedrivePolicy (or deleted when it has none)."),
    visibility_timeout: int = typer.Option(300, "--visibility-timeout", min=30, max=43200, metavar="SECONDS",
                                           help="How long a batch in hand stays hidden from other consumers."),
    retry_delay: int = typer.Option(30, "--retry-delay", min=0, max=43200, metavar="SECONDS",
                                    help="When a message whose re-collection failed comes back."),
    rules_dir: list[Path] = RulesOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Real time: read CloudTrail management events from SQS, re-collect and re-judge only the resources
    each write call touched, and record the result in the findings store scoped to those resources (a
    change that fixes a finding closes it; every other finding is left as it is). Read-only, failed,
    other-account and unknown calls are counted and ignored; a malformed message is logged and deleted."""
    import signal

    from cloudward.conformity.aws.scan import Judge, resolve_regions
    from cloudward.conformity.aws.session import SessionOptions, client_config, open_session
    from cloudward.conformity.aws.watch import Watcher, WatchSettings, stop_on_signals
    from cloudward.core.errors import UsageError
    from cloudward.core.scan import ScanResult

    judge = Judge(load_all_rules(list(rules_dir or [])))
    session = open_session(SessionOptions(profile=profile, assume_role=assume_role, external_id=external_id,
                                          endpoint_url=endpoint_url, region=region))
    if regions is not None and regions.strip() == "all":
        raise UsageError("--regions: name the regions (R1,R2); `all` is for `conformity scan aws`")
    watched = resolve_regions(session, regions)
    console = err_console()

    def log(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)

    def record_result(result: ScanResult) -> None:
        record(result, config, no_store)

    sqs = session.boto.client("sqs", region_name=_queue_region(queue) or session.home_region,
                              endpoint_url=sqs_endpoint_url or endpoint_url, config=client_config(session.options))
    settings_ = WatchSettings(queue_url=queue, regions=watched, once=once, visibility_timeout=visibility_timeout,
                              retry_delay=retry_delay, max_attempts=max_attempts)
    watcher = Watcher(sqs, session, judge, settings_, record=record_result, log=log)
    try:
        watcher.check()
    except Exception as exc:
        raise UsageError(f"--queue {queue}: cannot read the queue: {type(exc).__name__}: {exc}") from None
    log(f"watching {queue} for account {session.account}{' until it is empty' if once else ''}")
    interrupted = False
    with stop_on_signals(watcher) as received:
        try:
            stats = watcher.run()
        except KeyboardInterrupt:  # a second Ctrl-C: what was not deleted is delivered again
            interrupted = True
            stats = dict(watcher.stats)
        except Exception as exc:
            log(f"error: {type(exc).__name__}: {exc}")
            raise typer.Exit(3) from None
    interrupted = interrupted or signal.SIGINT in received
    log(f"conformity watch: {stats['messages']:,} messages, {stats['events']:,} events "
        f"({stats['evaluated']:,} evaluated, {stats['read_only']:,} read-only, {stats['unknown']:,} unknown, "
        f"{stats['failed_calls']:,} failed calls, {stats['other_account']:,} other account), "
        f"{stats['malformed']:,} malformed, {stats['batches']:,} re-evaluations, {stats['findings']:,} findings, "
        f"{stats['retried']:,} retried")
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def _queue_region(queue_url: str) -> str | None:
    """The region in an AWS queue URL (`https://sqs.eu-west-1.amazonaws.com/...`), if it says one."""
    from urllib.parse import urlsplit

    host = (urlsplit(queue_url).hostname or "").split(".")
    if len(host) >= 4 and host[0] == "sqs" and host[2] == "amazonaws":
        return host[1]
    return None


@app.command("report")
def report(
    framework: str = typer.Option("cis-aws", "--framework", help="Framework to report on (cis-aws)."),
    input_file: Path | None = InputOption,
    format: str | None = ReportFormatOption,
    output: Path | None = OutputOption,
    config: Path | None = ConfigOption,
) -> None:
    """Per control of the framework: pass, fail, error (its service could not be read), not checked
    (its service was not scanned) or not scored (no automated check)."""
    import json

    from cloudward.conformity.frameworks import evaluate_framework, load_framework
    from cloudward.core.errors import UsageError

    fmt = format or ("json" if output is not None or not sys.stdout.isatty() else "table")
    if fmt not in ("table", "json"):
        raise UsageError(f"--format: {fmt!r} (choose table or json)")
    spec = load_framework(framework)
    scan = _scan_from_file(input_file) if input_file is not None else _scan_from_store(config)
    rules = {r.id: r for r in load_all_rules() if r.engine_name == "aws"}
    outcome = evaluate_framework(spec, scan, rules)
    if fmt == "json":
        text = json.dumps(outcome, indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
        return
    _table(outcome, output)


def _scan_from_file(path: Path) -> dict[str, Any]:
    import json

    from cloudward.core.errors import InputError

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--input {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != "cloudward/v1" or not isinstance(doc.get("scan"), dict):
        raise InputError(f"--input {path}: not a cloudward/v1 report")
    scan = doc["scan"]
    if scan.get("kind") != "conformity-aws":
        raise InputError(f"--input {path}: a {scan.get('kind')!r} scan, not a conformity-aws one")
    return {"id": scan.get("id"), "source": str(path), "started": scan.get("started"),
            "stats": scan.get("stats") or {}, "errors": scan.get("errors") or [],
            "rule_ids": sorted({str(f.get("rule_id")) for f in doc.get("findings", []) if isinstance(f, dict)})}


def _scan_from_store(config: Path | None) -> dict[str, Any]:
    from cloudward.core.errors import UsageError
    from cloudward.store import open_store
    from cloudward.store.views import FindingQuery

    with open_store(settings(config)) as store:
        # `conformity watch` records its narrow re-evaluations under the same kind (so they can close what
        # a full scan opened): a report is about the latest full scan
        scans = [s for s in store.list_scans(kind="conformity-aws", limit=200)
                 if (s.stats or {}).get("trigger") != "watch"]
        if not scans:
            raise UsageError("no AWS scan in the findings store: run `cloudward conformity scan aws` "
                             "(or give --input report.json)")
        info = scans[0]
        findings = store.list_findings(FindingQuery(scan_id=info.id, status="all", include_suppressed=True))
    return {"id": info.id, "source": "store", "started": info.started.isoformat(), "stats": info.stats,
            "errors": [e.model_dump() for e in info.errors], "rule_ids": sorted({f.finding.rule_id for f in findings})}


def _table(outcome: dict[str, Any], output: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{outcome['framework']['title']} — scan {outcome['scan']['id'][:12]}")
    for column in ("control", "status", "title", "rules failing"):
        table.add_column(column, overflow="fold")
    colours = {"fail": "red", "pass": "green", "error": "yellow", "not checked": "dim", "not scored": "dim"}
    for control in outcome["controls"]:
        status = control["status"]
        table.add_row(control["id"], f"[{colours.get(status, 'white')}]{status}[/]", control["title"],
                      ", ".join(control.get("failing_rules", [])))
    summary = ", ".join(f"{v} {k}" for k, v in outcome["summary"].items())
    if output is None:
        console = Console()
        console.print(table)
        console.print(summary, highlight=False)
    else:
        with output.open("w", encoding="utf-8") as handle:
            console = Console(file=handle, width=160)
            console.print(table)
            console.print(summary, highlight=False)
