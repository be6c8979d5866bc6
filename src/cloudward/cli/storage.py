"""`cloudward storage scan` (objects in S3-compatible buckets and local files) and `cloudward storage
listen` (scan on upload, from S3 event notifications in SQS), with actions on the verdict.

Thin: validate options, compose the scan (File Storage Security's pipeline plus the secret scanner,
handed in from here so capabilities stay independent), then report, store and gate through
`cli/common.py`. Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage error, 3 nothing
could be listed or read, 130 interrupted (what was scanned is reported and remembered, so the next
run resumes). `listen` runs until stopped: 0 on SIGTERM or when `--once` drained the queue, 130 on
Ctrl-C, 2 when the queue cannot be read at start, 3 when it stops being readable under `--once`.
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
    record,
    resolve_format,
    settings,
)

if TYPE_CHECKING:
    from cloudward.core.finding import Finding
    from cloudward.core.rules import Rule
    from cloudward.storage.actions import ActionOutcome, Actions
    from cloudward.storage.scan import ObjectResult, SecretScanner, StorageScanOptions

app = typer.Typer(help="Scan object storage and files for malware, leaked secrets and archive bombs.",
                  no_args_is_help=True)

TargetsArgument = typer.Argument(..., show_default=False, metavar="TARGET...",
                                 help="s3://bucket or s3://bucket/prefix (any S3-compatible endpoint), or local "
                                 "files and directories.")
EndpointOption = typer.Option(None, "--endpoint-url", metavar="URL", envvar="AWS_ENDPOINT_URL",
                              help="S3 endpoint (MinIO, moto, Ceph...); default: AWS (or AWS_ENDPOINT_URL).")
RegionOption = typer.Option(None, "--region", envvar="AWS_DEFAULT_REGION", help="AWS region.")
ConcurrencyOption = typer.Option(4, "--concurrency", min=1, max=256, help="Objects scanned at once.")
ClamdOption = typer.Option(None, "--clamd", metavar="ADDRESS", envvar="CLOUDWARD_CLAMD",
                           help="Also ask clamd (unix:/path, /path or tcp://host:port) through INSTREAM.")
YaraOption = typer.Option(None, "--yara-rules", metavar="DIR", help="Add the YARA rules in this folder (repeatable).")
IocsOption = typer.Option(None, "--iocs", metavar="FILE", help="Add the indicators in this YAML file (repeatable; "
                          "sha256/md5 kinds match files).")
NoSecretsOption = typer.Option(False, "--no-secrets", help="Do not look for leaked credentials.")
RescanOption = typer.Option(False, "--rescan", help="Read every object again, even unchanged ones.")
ProcessesOption = typer.Option(0, "--processes", min=0, max=64, help="Judge local files in this many processes "
                               "(0: one per CPU, up to 8; YARA holds the interpreter lock, so processes, not "
                               "threads, use more cores). S3 objects are read by threads.")
ActionOption = typer.Option(None, "--action", metavar="SPEC",
                            help="What to do with each verdict (repeatable): tag, quarantine=s3://bucket/prefix, "
                            "promote=s3://bucket/prefix (clean objects), webhook=URL (the prefixes are "
                            "optional).")
QuarantineOnOption = typer.Option(None, "--quarantine-on", metavar="VERDICTS",
                                  help="Verdicts that quarantine (comma-separated: malicious, secret, error; "
                                  "default malicious,secret).")
NotifyOnOption = typer.Option(None, "--notify-on", metavar="VERDICTS",
                              help="Verdicts the webhook hears about (comma-separated, or all; "
                              "default malicious,secret,error).")
AllowHttpWebhookOption = typer.Option(False, "--allow-http-webhook",
                                      help="Allow a plain http:// webhook beyond loopback.")


def secret_scanner(rules: list[Rule]) -> SecretScanner:
    """The secret scanner as a stream session factory for File Storage Security."""
    import hashlib

    from cloudward import __version__, secrets
    from cloudward.storage.scan import SecretScanner

    secret_rules = [r for r in rules if r.engine_name == "secrets"]
    compiled = secrets.compile_rules(secret_rules)
    key = secrets.installation_key()
    ids = hashlib.sha256("\n".join(sorted(r.id for r in secret_rules)).encode()).hexdigest()[:12]

    class Session:
        def __init__(self, origin: str) -> None:
            self.origin = origin
            self.scanner = secrets.StreamScanner(compiled, origin)

        def _findings(self, matches: list[Any]) -> list[Finding]:
            return [secrets.to_finding(m, self.origin, key, target_kind="object") for m in matches]

        def feed(self, piece: bytes) -> list[Finding]:
            return self._findings(self.scanner.feed(piece))

        def close(self) -> list[Finding]:
            return self._findings(self.scanner.close())

    return SecretScanner(version=f"{__version__}:{ids}", start=Session)


def storage_actions(specs: list[str] | None, *, quarantine_on: str | None, notify_on: str | None,
                    allow_http_webhook: bool, s3: Any = None, endpoint_url: str | None = None,
                    region: str | None = None, concurrency: int = 8) -> Actions:
    """The `--action` policy (shared with `storage listen`); an S3 client is made when an action needs one."""
    from cloudward.core.errors import UsageError
    from cloudward.storage.actions import (
        DEFAULT_NOTIFY_ON,
        DEFAULT_QUARANTINE_ON,
        Actions,
        parse_actions,
        parse_verdicts,
    )
    from cloudward.storage.objects import ObjectError, s3_client

    parsed = parse_actions(specs, allow_http_webhook=allow_http_webhook)
    quarantine = parse_verdicts(quarantine_on, "--quarantine-on", DEFAULT_QUARANTINE_ON)
    if "clean" in quarantine:
        raise UsageError("--quarantine-on: clean objects are never quarantined")
    notify = parse_verdicts(notify_on, "--notify-on", DEFAULT_NOTIFY_ON)
    if s3 is None and any(a.needs_s3 for a in parsed):
        try:
            s3 = s3_client(endpoint_url, region, max_pool=concurrency * 2)
        except ObjectError as exc:
            raise UsageError(f"--action: {exc}") from None
    return Actions(parsed, s3=s3, quarantine_on=quarantine, notify_on=notify)


_WORKER: dict[str, Any] = {}


def _worker_init(recipe: dict[str, Any]) -> None:
    """In a worker process: build the same judge and secret scanner the parent built. Ctrl-C is the
    parent's to handle (it reports what was scanned); workers ignore it and end with the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["options"] = storage_options(**recipe, remember=False)


def _worker_scan(obj: Any) -> Any:
    from cloudward.storage.scan import scan_object

    return scan_object(obj, _WORKER["options"])


def storage_options(config: Path | None, *, rules_dir: list[Path] | None = None, yara_rules: list[Path] | None = None,
                    iocs: list[Path] | None = None, clamd: str | None = None, no_secrets: bool = False,
                    concurrency: int = 8, rescan: bool = False, remember: bool = True) -> StorageScanOptions:
    """Everything a storage scan needs, resolved from options and config (shared with `storage listen`)."""
    from cloudward.core.errors import UsageError
    from cloudward.engines.content import load_content_judge
    from cloudward.storage.scan import StorageScanOptions
    from cloudward.storage.state import ScanState

    rules = list(load_all_rules(list(rules_dir or [])))
    try:
        judge, problems = load_content_judge(rules, yara_dirs=list(yara_rules or []), ioc_files=list(iocs or []))
    except ValueError as exc:
        raise UsageError(f"--iocs: {exc}") from None
    if problems:
        err_console().print(f"yara: left out {len(problems)} rule file(s): {'; '.join(problems[:5])}",
                            highlight=False, markup=False)
    daemon = None
    if clamd:
        from cloudward.storage.clamd import Clamd, ClamdError

        try:
            daemon = Clamd(clamd)
            daemon.ping()
        except (ClamdError, ValueError) as exc:
            raise UsageError(f"--clamd: {exc}") from None
    state = ScanState(settings(config).resolved_data_dir() / "storage" / "state.sqlite") if remember else None
    return StorageScanOptions(judge=judge, secrets=None if no_secrets else secret_scanner(rules), clamd=daemon,
                              concurrency=concurrency, state=state, rescan=rescan)


@app.command("scan")
def scan(
    targets: list[str] = TargetsArgument,
    endpoint_url: str | None = EndpointOption,
    region: str | None = RegionOption,
    concurrency: int = ConcurrencyOption,
    clamd: str | None = ClamdOption,
    yara_rules: list[Path] = YaraOption,
    iocs: list[Path] = IocsOption,
    no_secrets: bool = NoSecretsOption,
    rescan: bool = RescanOption,
    processes: int = ProcessesOption,
    action: list[str] = ActionOption,
    quarantine_on: str | None = QuarantineOnOption,
    notify_on: str | None = NotifyOnOption,
    allow_http_webhook: bool = AllowHttpWebhookOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Scan every object under each target: YARA, hash indicators, ClamAV (with --clamd), secrets,
    archives opened with limits. Unchanged objects (same ETag, same rules) are not read again.
    `--action` tags, quarantines, promotes or notifies by verdict; a failed action leaves the object
    where it was and is reported as an error."""
    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.storage.actions import BackgroundActions
    from cloudward.storage.scan import scan_objects

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    actions = storage_actions(action, quarantine_on=quarantine_on, notify_on=notify_on,
                              allow_http_webhook=allow_http_webhook, endpoint_url=endpoint_url, region=region,
                              concurrency=concurrency)
    actions.check_targets(list(targets))
    recipe: dict[str, Any] = {"config": config, "rules_dir": rules_dir, "yara_rules": yara_rules, "iocs": iocs,
                              "clamd": clamd, "no_secrets": no_secrets, "concurrency": concurrency}
    options = storage_options(**recipe, rescan=rescan)
    if processes == 0:
        import os

        processes = min(8, os.cpu_count() or 1) if any(not t.startswith("s3://") for t in targets) else 1
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor

        options.processes = ProcessPoolExecutor(max_workers=processes, initializer=_worker_init, initargs=(recipe,))
        options.process_scan = _worker_scan
        options.concurrency = max(options.concurrency, processes)
    result = ScanResult(kind="storage", targets=list(targets))
    client = actions.s3
    listed_any = False
    totals: dict[str, Any] = {}

    judge_again: list[str] = []

    def acted(res: ObjectResult, outcome: ActionOutcome) -> None:
        for message in outcome.errors:
            result.add_error(res.obj.url, message, stage="action")
        if outcome.errors or outcome.moved:
            judge_again.append(res.obj.url)

    runner = BackgroundActions(actions, concurrency, acted) if actions else None
    try:
        for target in targets:
            objects, client = _objects(target, endpoint_url, region, concurrency, client, result)
            if objects is None:
                continue
            listed_any = True
            scan_objects(objects, options, result, on_result=runner.submit if runner else None)
            for name, value in result.stats.items():  # each call counts its own target: add them up
                totals[name] = totals.get(name, 0) + value
            if result.status is ScanStatus.CANCELLED:
                break
    finally:
        if runner is not None:
            runner.drain()
        if options.state is not None:
            # quarantined (nothing is at that URL any more) or an action failed (the next run judges
            # the object again and retries its actions, the webhook included)
            for url in judge_again:
                options.state.forget(url)
            options.state.close()
        actions.close()
        if options.processes is not None:
            options.processes.shutdown(cancel_futures=True)
    if actions:
        totals.update(actions.stats)
    if "seconds" in totals:
        totals["seconds"] = round(totals["seconds"], 3)
    result.stats = totals
    stats = result.stats
    done = ""
    if actions:
        done = (f"; {stats.get('tagged', 0):,} tagged, {stats.get('quarantined', 0):,} quarantined, "
                f"{stats.get('promoted', 0):,} promoted, {stats.get('notified', 0):,} notified, "
                f"{stats.get('action_errors', 0):,} action errors")
    err_console().print(
        f"storage scan: {stats.get('objects', 0):,} objects ({stats.get('unchanged', 0):,} unchanged), "
        f"{stats.get('malicious', 0):,} malicious, {stats.get('secret', 0):,} with secrets, "
        f"{stats.get('error', 0):,} errors, {len(result.findings):,} findings{done}", highlight=False)
    if result.status is ScanStatus.RUNNING:
        result.finish(ScanStatus.COMPLETED if listed_any else ScanStatus.FAILED)
    finish(result, format, output, fail_on, config, no_store)


@app.command("listen")
def listen(
    queue: str = typer.Option(..., "--queue", metavar="URL", show_default=False,
                              help="SQS queue receiving the buckets' s3:ObjectCreated:* notifications."),
    dead_letter_queue: str | None = typer.Option(None, "--dead-letter-queue", metavar="URL",
                                                 help="Move a message here after --max-attempts failed tries "
                                                 "(default: leave it to the queue's RedrivePolicy)."),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, max=1000,
                                     help="Receives of a failing message before it is dead-lettered."),
    once: bool = typer.Option(False, "--once", help="Drain the queue, then exit."),
    visibility_timeout: int = typer.Option(300, "--visibility-timeout", min=30, max=43200, metavar="SECONDS",
                                           help="How long a message in hand stays hidden (extended while "
                                           "its object is being scanned)."),
    retry_delay: int = typer.Option(30, "--retry-delay", min=0, max=43200, metavar="SECONDS",
                                    help="When a failed message comes back to be tried again."),
    action: list[str] = ActionOption,
    quarantine_on: str | None = QuarantineOnOption,
    notify_on: str | None = NotifyOnOption,
    allow_http_webhook: bool = AllowHttpWebhookOption,
    endpoint_url: str | None = EndpointOption,
    sqs_endpoint_url: str | None = typer.Option(None, "--sqs-endpoint-url", metavar="URL",
                                                envvar="AWS_ENDPOINT_URL_SQS",
                                                help="SQS endpoint, when not AWS (default: AWS_ENDPOINT_URL)."),
    region: str | None = RegionOption,
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=256, help="Objects scanned at once."),
    clamd: str | None = ClamdOption,
    yara_rules: list[Path] = YaraOption,
    iocs: list[Path] = IocsOption,
    no_secrets: bool = NoSecretsOption,
    rescan: bool = RescanOption,
    rules_dir: list[Path] = RulesOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Scan on upload: consume S3 ObjectCreated notifications from SQS, scan each new object, act on
    its verdict and record it in the findings store; a message is deleted only after its result is
    recorded, and one that keeps failing goes to the dead-letter queue."""
    import signal

    from cloudward.core.errors import UsageError
    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.storage.listen import Listener, ListenError, ListenSettings, queue_region, stop_on_signals
    from cloudward.storage.objects import ObjectError, s3_client

    if dead_letter_queue and dead_letter_queue == queue:
        raise UsageError("--dead-letter-queue: the queue being listened to")
    region = region or queue_region(queue)
    try:
        s3 = s3_client(endpoint_url, region, max_pool=concurrency * 2 + 4)
    except ObjectError as exc:
        raise UsageError(str(exc)) from None
    actions = storage_actions(action, quarantine_on=quarantine_on, notify_on=notify_on,
                              allow_http_webhook=allow_http_webhook, s3=s3)
    for spec in actions.specs:
        if spec.location is not None and not spec.location.prefix:
            err_console().print(f"note: --action {spec.kind}={spec.location.url}: objects uploaded to that bucket "
                                f"itself are not {spec.kind}d (give a prefix to keep them apart)", highlight=False)
    options = storage_options(config, rules_dir=rules_dir, yara_rules=yara_rules, iocs=iocs, clamd=clamd,
                              no_secrets=no_secrets, concurrency=concurrency, rescan=rescan)
    console = err_console()

    def log(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)

    def record_object(res: ObjectResult, outcome: ActionOutcome) -> None:
        scan = ScanResult(kind="storage", targets=[res.obj.url], findings=list(res.findings))
        for message in res.errors:
            scan.add_error(res.obj.url, message, stage="storage")
        for message in outcome.errors:
            scan.add_error(res.obj.url, message, stage="action")
        scan.stats = {"objects": 1, res.verdict: 1, "bytes": res.bytes_read, "trigger": "listen",
                      "actions": list(outcome.done)}
        scan.finish(ScanStatus.FAILED if res.verdict == "error" else ScanStatus.COMPLETED)
        record(scan, config, no_store)

    settings_ = ListenSettings(queue_url=queue, dead_letter_queue=dead_letter_queue, max_attempts=max_attempts,
                               once=once, concurrency=concurrency, visibility_timeout=visibility_timeout,
                               retry_delay=retry_delay)
    interrupted = False
    try:
        import boto3
        from botocore.config import Config

        sqs = boto3.client("sqs", endpoint_url=sqs_endpoint_url, region_name=region,
                           config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                         max_pool_connections=concurrency + 4))
        listener = Listener(sqs, s3, options, settings_, actions=actions, record=record_object, log=log)
        try:
            for warning in listener.check():
                log(f"warning: {warning}")
        except ListenError as exc:
            raise UsageError(str(exc)) from None
        log(f"listening on {queue}{' until it is empty' if once else ''} "
            f"({concurrency} at a time{', actions: ' + ', '.join(action) if action else ''})")
        with stop_on_signals(listener) as received:
            try:
                stats = listener.run()
            except KeyboardInterrupt:  # a second Ctrl-C: what was not deleted is delivered again
                interrupted = True
                stats = listener.stats
            except ListenError as exc:
                log(f"error: {exc}")
                raise typer.Exit(3) from None
        interrupted = interrupted or signal.SIGINT in received
    finally:
        if options.state is not None:
            options.state.close()
        actions.close()
    log(f"storage listen: {stats['messages']:,} messages ({stats['test_events']:,} test events), "
        f"{stats['objects']:,} objects scanned "
        f"({stats['malicious']:,} malicious, {stats['secret']:,} with secrets, {stats['error']:,} errors), "
        f"{stats['duplicates']:,} duplicates, {stats['gone']:,} gone, {stats['dead_lettered']:,} dead-lettered, "
        f"{stats['retried']:,} retried"
        + (f"; {stats.get('tagged', 0):,} tagged, {stats.get('quarantined', 0):,} quarantined, "
           f"{stats.get('promoted', 0):,} promoted, {stats.get('notified', 0):,} notified, "
           f"{stats.get('action_errors', 0):,} action errors" if actions else ""))
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def _objects(target: str, endpoint_url: str | None, region: str | None, concurrency: int, client: Any,
             result: Any) -> tuple[Any, Any]:
    """The object iterator for one target (None after recording an error naming it)."""
    from cloudward.storage.objects import ObjectError, iter_local, iter_s3, parse_s3_url, s3_client

    if target.startswith("s3://"):
        try:
            bucket, prefix = parse_s3_url(target)
            client = client or s3_client(endpoint_url, region, max_pool=concurrency * 2)
        except (ValueError, ObjectError) as exc:
            result.add_error(target, str(exc), stage="list")
            return None, client

        def listed() -> Any:
            try:
                yield from iter_s3(client, bucket, prefix)
            except ObjectError as exc:
                result.add_error(target, str(exc), stage="list")

        return listed(), client
    if not Path(target).exists():
        result.add_error(target, "no such file or directory", stage="list")
        return None, client
    return iter_local(target, lambda path, why: result.add_error(path, why, stage="list")), client
