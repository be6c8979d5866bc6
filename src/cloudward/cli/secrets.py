"""`cloudward secrets scan`: leaked credentials in files, git history, stdin and process environments.

Thin, like every command module: validate options (before anything is read), run
`cloudward.secrets.scan.run_scan`, then report, store and gate through `cli/common.py`.
Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage error, 3 the scan itself failed,
130 interrupted (the partial report is still written). Secrets are only ever shown masked: the
engine masks them and nothing here touches the raw value.
"""

from __future__ import annotations

import re
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
    parse_severity,
    resolve_format,
)

if TYPE_CHECKING:
    from cloudward.secrets.baseline import Baseline

app = typer.Typer(help="Find leaked credentials (files, git history, stdin, process environments).",
                  no_args_is_help=True)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int | None:
    """"50M", "1.5g", "4096", "10MiB" -> bytes; "0"/"none"/"unlimited" -> no limit."""
    from cloudward.core.errors import UsageError

    if text.strip().lower() in ("none", "unlimited"):
        return None
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"--max-size: cannot read {text!r} (examples: 50M, 1G, 4096)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    return size or None


def _load_baseline(path: Path) -> Baseline:
    from cloudward.core.errors import UsageError
    from cloudward.secrets.baseline import Baseline

    try:
        return Baseline.load(path)
    except ValueError as exc:
        raise UsageError(f"--baseline: {exc}") from None


PathsArgument = typer.Argument(None, show_default=False,
                               help="Files or directories to scan (default: .); '-' reads stdin.")

BranchOption = typer.Option(None, "--branch", metavar="REF",
                            help="With --git: only history reachable from REF (repeatable).")
BaselineOption = typer.Option(None, "--baseline", metavar="FILE",
                              help="Report only findings not in this baseline (see `secrets baseline`); "
                                   "its false positives are listed as suppressed.")
VerifyOption = typer.Option(False, "--verify",
                            help="Ask the provider whose each found key is (AWS: STS GetCallerIdentity signed "
                                 "with the key). Sends the key to its provider; off by default.")
VerifyEndpointOption = typer.Option(None, "--verify-endpoint", metavar="URL",
                                    help="With --verify: the STS endpoint (default: AWS_ENDPOINT_URL_STS, "
                                         "AWS_ENDPOINT_URL, else AWS).")


@app.command("scan")
def scan(
    paths: list[str] = PathsArgument,
    git: bool = typer.Option(False, "--git", help="Scan each path's git history (every ref) instead of "
                             "its working tree."),
    since: str | None = typer.Option(None, "--since", metavar="DATE",
                                     help="With --git: only commits after DATE (any date git accepts)."),
    branch: list[str] = BranchOption,
    environ: bool = typer.Option(False, "--environ", help="Also scan every readable process environment."),
    gitignore: bool = typer.Option(False, "--gitignore", help="Skip files matched by .gitignore."),
    max_size: str = typer.Option("50M", "--max-size", metavar="SIZE",
                                 help="Skip (and report) files larger than this; 0 = no limit."),
    baseline: Path | None = BaselineOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
    verify: bool = VerifyOption,
    verify_endpoint: str | None = VerifyEndpointOption,
) -> None:
    """Scan for secrets; findings show masked values and a keyed fingerprint, never the secret."""
    from cloudward.core.errors import UsageError
    from cloudward.secrets.scan import STDIN, ScanRequest, run_scan

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    limit = parse_size(max_size)
    targets = list(paths or []) or ([] if environ else ["."])
    if targets.count(STDIN) > 1:
        raise UsageError("'-' (stdin) can be given only once")
    if (since or branch) and not git:
        raise UsageError("--since and --branch need --git")
    known = _load_baseline(baseline) if baseline is not None else None
    if verify_endpoint is not None and not verify:
        raise UsageError("--verify-endpoint needs --verify")
    verifiers = {}
    if verify:
        from cloudward.secrets.verify import prepare

        verifiers = prepare(verify_endpoint)

    request = ScanRequest(paths=targets, git=git, since=since, branches=tuple(branch or ()),
                          environ=environ, gitignore=gitignore, max_size=limit, rules_dirs=list(rules_dir or []),
                          verifiers=verifiers)
    result = run_scan(request, hmac_key=known.hmac_key if known is not None else None)
    if known is not None:
        from cloudward.secrets.baseline import apply_baseline

        apply_baseline(result, known)
    stats = result.stats
    err_console().print(
        f"secrets scan: {stats.get('blobs', 0):,} blobs, {stats.get('bytes_read', 0):,} bytes, "
        f"{len(result.findings):,} finding{'s' if len(result.findings) != 1 else ''}, "
        f"{len(result.errors):,} error{'s' if len(result.errors) != 1 else ''}", highlight=False)

    finish(result, format, output, fail_on, config, no_store)


BaselineOutputOption = typer.Option(Path(".cloudward-secrets.json"), "--output", "-o",
                                    help="Baseline file to write (updated in place: audit decisions kept).")


@app.command("baseline")
def make_baseline(
    paths: list[str] = PathsArgument,
    output: Path = BaselineOutputOption,
    gitignore: bool = typer.Option(False, "--gitignore", help="Skip files matched by .gitignore."),
    max_size: str = typer.Option("50M", "--max-size", metavar="SIZE", help="Skip files larger than this."),
    rules_dir: list[Path] = RulesOption,
) -> None:
    """Record today's findings so later scans (`scan --baseline FILE`) report only new ones.

    Record audit decisions with `cloudward secrets audit FINGERPRINT --false-positive` (or by
    hand); running this again keeps the decisions of the findings that are still there."""
    from cloudward.secrets.baseline import Baseline
    from cloudward.secrets.scan import STDIN, ScanRequest, run_scan

    targets = list(paths or []) or ["."]
    if STDIN in targets:
        from cloudward.core.errors import UsageError

        raise UsageError("a baseline is made from files, not stdin")
    known = _load_baseline(output) if output.exists() else Baseline()
    # The baseline file itself holds only masked values, but skip it anyway: it is ours.
    request = ScanRequest(paths=targets, gitignore=gitignore, max_size=parse_size(max_size),
                          rules_dirs=list(rules_dir or []))
    result = run_scan(request, hmac_key=known.hmac_key)
    known.update(f for f in result.findings if Path(f.target.name).resolve() != output.resolve())
    known.save(output)
    for error in result.errors:
        err_console().print(f"warning: {error.target}: {error.message}", highlight=False, markup=False)
    err_console().print(f"wrote {len(known.entries)} baseline entr{'y' if len(known.entries) == 1 else 'ies'} "
                        f"to {output}", highlight=False)


def _auditor() -> str:
    """Who is deciding: git's user.email where set (what a reviewer will recognise), else $USER."""
    import getpass
    import subprocess

    try:
        email = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True,
                               timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        email = ""
    if email:
        return email
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


FingerprintsArgument = typer.Argument(None, show_default=False, metavar="[FINGERPRINT]...",
                                      help="Entries to decide on (a unique prefix of 6+ characters).")
AuditBaselineOption = typer.Option(Path(".cloudward-secrets.json"), "--baseline", "-b", metavar="FILE",
                                   help="The baseline file to read and update.")


@app.command("audit")
def audit_baseline(
    fingerprints: list[str] = FingerprintsArgument,
    true_positive: bool = typer.Option(False, "--true-positive", help="A real secret: keep reporting it "
                                       "as known until it is revoked and removed."),
    false_positive: bool = typer.Option(False, "--false-positive", help="Not a secret: list it as suppressed."),
    unaudited: bool = typer.Option(False, "--unaudited", help="Undo an earlier decision."),
    by: str | None = typer.Option(None, "--by", help="Who decided (default: git user.email, else $USER)."),
    baseline: Path = AuditBaselineOption,
) -> None:
    """Record audit decisions in a baseline, or list its entries when no decision is given."""
    from cloudward.core.errors import UsageError
    from cloudward.secrets.baseline import Decision

    known = _load_baseline(baseline) if baseline.exists() else None
    if known is None:
        raise UsageError(f"--baseline: {baseline} does not exist (make one with `cloudward secrets baseline`)")
    chosen = [d for d, on in ((Decision.TRUE_POSITIVE, true_positive), (Decision.FALSE_POSITIVE, false_positive),
                              (Decision.UNAUDITED, unaudited)) if on]
    if len(chosen) > 1:
        raise UsageError("give only one of --true-positive, --false-positive, --unaudited")
    if not chosen:
        if fingerprints:
            raise UsageError("say what the entries are: --true-positive, --false-positive or --unaudited")
        for entry in sorted(known.entries.values(), key=lambda e: (e.origin, e.line or 0)):
            where = f"{entry.origin}:{entry.line}" if entry.line else entry.origin
            who = f" by {entry.audited_by}" if entry.audited_by else ""
            typer.echo(f"{entry.fingerprint[:12]}  {entry.decision.value:<14} {entry.rule_id:<32} {where}  "
                       f"{entry.masked}{who}")
        return
    if not fingerprints:
        raise UsageError("name the entries to decide on (see `cloudward secrets audit` for the list)")
    who = by or _auditor()
    try:
        decided = [known.decide(fp, chosen[0], who) for fp in fingerprints]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    known.save(baseline)
    for entry in decided:
        err_console().print(f"{entry.fingerprint[:12]} {entry.rule_id} ({entry.origin}): {entry.decision.value}",
                            highlight=False, markup=False)
