"""`cloudward storage scan`: objects in S3-compatible buckets and local files.

Thin: validate options, compose the scan (File Storage Security's pipeline plus the secret scanner,
handed in from here so capabilities stay independent), then report, store and gate through
`cli/common.py`. Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage error, 3 nothing
could be listed or read, 130 interrupted (what was scanned is reported and remembered, so the next
run resumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from cloudward.core.finding import Finding
    from cloudward.core.rules import Rule
    from cloudward.storage.scan import SecretScanner, StorageScanOptions

app = typer.Typer(help="Scan object storage and files for malware, leaked secrets and archive bombs.",
                  no_args_is_help=True)

TargetsArgument = typer.Argument(..., show_default=False, metavar="TARGET...",
                                 help="s3://bucket[/prefix] (any S3-compatible endpoint) or local files/directories.")
EndpointOption = typer.Option(None, "--endpoint-url", metavar="URL", envvar="AWS_ENDPOINT_URL",
                              help="S3 endpoint (MinIO, moto, Ceph...); default: AWS (or AWS_ENDPOINT_URL).")
RegionOption = typer.Option(None, "--region", envvar="AWS_DEFAULT_REGION", help="AWS region.")
ConcurrencyOption = typer.Option(8, "--concurrency", min=1, max=256, help="Objects scanned at once.")
ClamdOption = typer.Option(None, "--clamd", metavar="ADDRESS", envvar="CLOUDWARD_CLAMD",
                           help="Also ask clamd (unix:/path, /path or tcp://host:port) through INSTREAM.")
YaraOption = typer.Option(None, "--yara-rules", metavar="DIR", help="Add the YARA rules in this folder (repeatable).")
IocsOption = typer.Option(None, "--iocs", metavar="FILE", help="Add the indicators in this YAML file (repeatable; "
                          "sha256/md5 kinds match files).")
NoSecretsOption = typer.Option(False, "--no-secrets", help="Do not look for leaked credentials.")
RescanOption = typer.Option(False, "--rescan", help="Read every object again, even unchanged ones.")


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

        daemon = Clamd(clamd)
        try:
            daemon.ping()
        except ClamdError as exc:
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
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Scan every object under each target: YARA, hash indicators, ClamAV (with --clamd), secrets,
    archives opened with limits. Unchanged objects (same ETag, same rules) are not read again."""
    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.storage.scan import scan_objects

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    options = storage_options(config, rules_dir=rules_dir, yara_rules=yara_rules, iocs=iocs, clamd=clamd,
                              no_secrets=no_secrets, concurrency=concurrency, rescan=rescan)
    result = ScanResult(kind="storage", targets=list(targets))
    client = None
    listed_any = False
    try:
        for target in targets:
            objects, client = _objects(target, endpoint_url, region, concurrency, client, result)
            if objects is None:
                continue
            listed_any = True
            scan_objects(objects, options, result)
            if result.status is ScanStatus.CANCELLED:
                break
    finally:
        if options.state is not None:
            options.state.close()
    stats = result.stats
    err_console().print(
        f"storage scan: {stats.get('objects', 0):,} objects ({stats.get('unchanged', 0):,} unchanged), "
        f"{stats.get('malicious', 0):,} malicious, {stats.get('secret', 0):,} with secrets, "
        f"{stats.get('error', 0):,} errors, {len(result.findings):,} findings", highlight=False)
    if result.status is ScanStatus.RUNNING:
        result.finish(ScanStatus.COMPLETED if listed_any else ScanStatus.FAILED)
    finish(result, format, output, fail_on, config, no_store)


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
