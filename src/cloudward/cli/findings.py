"""`cloudward findings`: what the store knows across scans — list, show, diff, suppress.

Thin like every command module: parse options, call `cloudward.store`, render. The store (and
with it SQLAlchemy) is imported inside command bodies so `cloudward --version` stays fast.
Rendering: `table` for people (rich, every scanned-system string escaped by `visible()`), `json`
for scripts — the `cloudward/v1` document, each finding carrying the store's extra keys (status,
suppression, first/last scan).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cloudward.cli.common import ConfigOption, out_console, parse_severity, settings

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import RenderableType
    from rich.text import Text

    from cloudward.store import ScanDiff, ScanInfo, Store, StoredFinding, SuppressionInfo

app = typer.Typer(
    help="The findings store: list, show, diff and suppress findings across scans.",
    no_args_is_help=True,
)

FORMATS = ("table", "json")
FormatOption = typer.Option(None, "--format", "-f",
                            help="table or json (default: table on a terminal, json otherwise).")
FINGERPRINT_WIDTH = 12
SCAN_ID_WIDTH = 12
FILE_WIDTH = 120


# --- plumbing --------------------------------------------------------------------------------


@contextmanager
def _store(config: Path | None) -> Iterator[Store]:
    from cloudward.store import open_store

    with open_store(settings(config)) as store:
        yield store


def _format(fmt: str | None) -> str:
    from cloudward.core.errors import UsageError

    if fmt is None:
        return "table" if sys.stdout.isatty() else "json"
    if fmt not in FORMATS:
        raise UsageError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


def _write_json(document: dict[str, Any]) -> None:
    # ASCII-only, like the JSON report: evidence is hostile input and escapes survive any pipe.
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=True) + "\n")


def _tool_version() -> str:
    from cloudward import __version__

    return __version__


def _print(*renderables: RenderableType) -> None:
    """Print to stdout. A terminal gets the shared console; a pipe or file gets a plain one at a
    roomy fixed width (rich's 80 columns fold every identifier) without rich's trailing padding."""
    console = out_console()
    if console.is_terminal:
        for renderable in renderables:
            console.print(renderable, highlight=False)
        return
    from rich.console import Console

    plain = Console(file=sys.stdout, width=None if os.environ.get("COLUMNS") else FILE_WIDTH,
                    force_terminal=False, markup=False, emoji=False, highlight=False)
    with plain.capture() as capture:
        for renderable in renderables:
            plain.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))


def _text(value: object, style: str = "") -> Text:
    from rich.text import Text

    from cloudward.report._common import visible

    return Text(visible(value), style=style)


def _when(moment: datetime | None) -> str:
    from cloudward.report._common import human_time

    return human_time(moment)


def _default_author() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


# --- rendering ---------------------------------------------------------------------------------


def _severity(item: StoredFinding) -> Text:
    from cloudward.report.table import SEVERITY_STYLE

    severity = item.finding.severity
    return _text(severity.value.upper(), SEVERITY_STYLE[severity])


def _status(item: StoredFinding) -> Text:
    text = _text(item.status, "green" if item.status == "fixed" else "")
    if item.suppressed:
        text.append("\nsuppressed", style="dim")
    return text


def _findings_table(items: Sequence[StoredFinding], title: str | None = None,
                    with_status: bool = True) -> RenderableType:
    from rich import box
    from rich.table import Table

    from cloudward.report._common import target_label

    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("Fingerprint", no_wrap=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Rule", overflow="fold", ratio=1)
    table.add_column("Target", overflow="fold", ratio=1)
    if with_status:
        table.add_column("Status", no_wrap=True)
    table.add_column("Last seen (UTC)", no_wrap=True)
    for item in items:
        row = [_text(item.fingerprint[:FINGERPRINT_WIDTH], "dim"), _severity(item),
               _text(item.finding.rule_id), _text(target_label(item.finding))]
        if with_status:
            row.append(_status(item))
        seen = item.finding.last_seen
        row.append(_text(seen.strftime("%Y-%m-%d %H:%M") if seen else "-"))
        table.add_row(*row, style="dim" if item.suppressed else "")
    return table


def _summary(items: Sequence[StoredFinding], hidden: int) -> Text:
    from cloudward.report._common import SEVERITIES
    from cloudward.report.table import SEVERITY_STYLE

    counted = [i for i in items if not i.suppressed]
    text = _text(f"{len(counted)} finding{'' if len(counted) == 1 else 's'}: ", "bold")
    for index, severity in enumerate(SEVERITIES):
        count = sum(1 for i in counted if i.finding.severity == severity)
        text.append(", " if index else "")
        text.append(f"{count} {severity.value}", style=SEVERITY_STYLE[severity] if count else "dim")
    shown_suppressed = len(items) - len(counted)
    if shown_suppressed:
        text.append(f"; {shown_suppressed} suppressed shown, not counted", style="dim")
    if hidden:
        text.append(f"; {hidden} suppressed hidden (--include-suppressed shows them)", style="dim")
    return text


def _scan_line(scan: ScanInfo) -> Text:
    text = _text(f"{scan.kind} scan ", "bold")
    text.append_text(_text(scan.id, "dim"))
    text.append(f"  {scan.status.value}  started {_when(scan.started)}")
    if scan.targets:
        more = len(scan.targets) - 5
        shown = ", ".join(scan.targets[:5]) + (f" (+{more} more)" if more > 0 else "")
        text.append_text(_text(f"  targets: {shown}"))
    return text


# --- commands ----------------------------------------------------------------------------------


@app.command("list")
def list_findings(
    severity: str | None = typer.Option(None, "--severity", "-s",
                                        help="Only findings at or above this severity."),
    category: str | None = typer.Option(None, "--category",
                                        help="Only this category (exposure, secret, ...)."),
    rule: str | None = typer.Option(None, "--rule", help="Only this rule id (globs: 'redis.*')."),
    status: str | None = typer.Option(None, "--status",
                                      help="open, fixed or all (default: open; all with --scan)."),
    target: str | None = typer.Option(None, "--target", help="Only targets containing this text."),
    scan: str | None = typer.Option(None, "--scan",
                                    help="Only findings this scan saw (id, prefix or 'latest')."),
    include_suppressed: bool = typer.Option(False, "--include-suppressed",
                                            help="Show suppressed findings too, marked."),
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    config: Path | None = ConfigOption,
) -> None:
    """List stored findings (open ones by default), most severe first."""
    from cloudward.core.finding import utcnow
    from cloudward.core.scan import ScanResult, ScanStatus
    from cloudward.store import FindingQuery

    chosen = _format(format)
    query = FindingQuery(
        min_severity=parse_severity(severity, "--severity"), category=category, rule_id=rule,
        status=(status or ("all" if scan else "open")).lower(),  # type: ignore[arg-type]
        target=target, scan_id=scan, include_suppressed=True,
    )
    with _store(config) as store:
        everything = store.list_findings(query)
        scan_info = store.get_scan(scan) if scan else None
    items = [i for i in everything if include_suppressed or not i.suppressed]
    hidden = len(everything) - len(items)
    if chosen == "json":
        now = utcnow()
        view = scan_info.to_result() if scan_info else ScanResult(
            id="store", kind="findings", status=ScanStatus.COMPLETED, started=now, finished=now)
        document = view.contract(_tool_version())
        document["scan"]["stats"] = {
            **(scan_info.stats if scan_info else {}),
            "query": {"severity": severity, "category": category, "rule": rule, "status": query.status,
                      "target": target, "scan": scan_info.id if scan_info else None,
                      "include_suppressed": include_suppressed},
            "listed": len(items), "suppressed_hidden": hidden,
        }
        document["findings"] = [i.to_contract() for i in items]
        _write_json(document)
        return
    renderables: list[RenderableType] = [_scan_line(scan_info)] if scan_info else []
    renderables.append(_findings_table(items) if items else _text("No findings.", "green"))
    _print(*renderables, _summary(items, hidden))


@app.command("show")
def show(
    fingerprint: str = typer.Argument(..., help="A fingerprint or a unique prefix of one."),
    format: str | None = FormatOption,
    config: Path | None = ConfigOption,
) -> None:
    """Everything the store knows about one finding, and the scans that saw it."""
    chosen = _format(format)
    with _store(config) as store:
        item = store.get_finding(fingerprint)
        scans = store.finding_scans(item.fingerprint)
    if chosen == "json":
        _write_json({"schema": "cloudward/v1", "tool": {"name": "cloudward", "version": _tool_version()},
                     "finding": item.to_contract(), "scans": [s.to_dict() for s in scans]})
        return
    _print(*_show_lines(item, scans))


def _show_lines(item: StoredFinding, scans: Sequence[ScanInfo]) -> list[RenderableType]:
    from rich import box
    from rich.table import Table

    from cloudward.report._common import compact

    f = item.finding
    fields = Table(box=None, show_header=False, pad_edge=False)
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    status = _status(item)
    if item.fixed_at:
        status.append(f" since {_when(item.fixed_at)} (scan {(item.fixed_scan_id or '-')[:SCAN_ID_WIDTH]})")
    rows: list[tuple[str, Text]] = [
        ("Fingerprint", _text(f.fingerprint)),
        ("Rule", _text(f.rule_id)),
        ("Title", _text(f.title)),
        ("Severity", _severity(item)),
        ("Category", _text(f.category.value)),
        ("Target", _text(str(f.target))),
        ("Status", status),
        ("First seen", _text(f"{_when(f.first_seen)}  (scan {(item.first_scan_id or '-')[:SCAN_ID_WIDTH]})")),
        ("Last seen", _text(f"{_when(f.last_seen)}  (scan {(item.last_scan_id or '-')[:SCAN_ID_WIDTH]})")),
    ]
    if item.suppression:
        s = item.suppression
        until = f", until {_when(s.expires)}" if s.expires else ""
        rows.append(("Suppressed", _text(f"{s.reason}  (by {s.author}, {_when(s.created)}{until})")))
    for key, value in f.location.items():
        rows.append((f"Location {key}", _text(compact(value))))
    for key, value in f.evidence.items():
        rows.append((f"Evidence {key}", _text(compact(value))))
    for label, value in (("Description", f.description), ("Remediation", f.remediation)):
        if value:
            rows.append((label, _text(value)))
    if f.references:
        rows.append(("References", _text("\n".join(f.references))))
    if f.attack:
        rows.append(("ATT&CK", _text(", ".join(f.attack))))
    for framework, controls in f.compliance.items():
        rows.append((f"Compliance {framework}", _text(", ".join(controls))))
    for label, value in rows:
        fields.add_row(label, value)
    history = Table(title=f"Seen by {len(scans)} scan{'' if len(scans) == 1 else 's'} (newest first)",
                    title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    history.add_column("Scan", no_wrap=True)
    history.add_column("Kind")
    history.add_column("Status")
    history.add_column("Started", no_wrap=True)
    for scan in scans:
        history.add_row(_text(scan.id[:SCAN_ID_WIDTH]), _text(scan.kind), _text(scan.status.value),
                        _text(_when(scan.started)))
    return [fields, history]


@app.command("diff")
def diff(
    before: str | None = typer.Option(None, "--from", help="Older scan (default: the previous completed "
                                      "scan of the same kind and targets)."),
    after: str | None = typer.Option(None, "--to", help="Newer scan (default: the latest scan)."),
    include_suppressed: bool = typer.Option(False, "--include-suppressed",
                                            help="Include suppressed findings, marked."),
    format: str | None = FormatOption,
    config: Path | None = ConfigOption,
) -> None:
    """What changed between two scans: new, fixed, still open (and not rechecked)."""
    chosen = _format(format)
    with _store(config) as store:
        result = store.diff(before, after, include_suppressed=include_suppressed)
    if chosen == "json":
        _write_json(result.to_contract(_tool_version()))
        return
    _print(*_diff_lines(result))


def _diff_lines(result: ScanDiff) -> list[RenderableType]:
    header = _text("from ", "bold")
    header.append_text(_scan_line(result.before))
    header.append("\n")
    header.append("to   ", style="bold")
    header.append_text(_scan_line(result.after))
    lines: list[RenderableType] = [header]
    sections = (("New", result.new), ("Fixed", result.fixed), ("Still open", result.still_open),
                ("Not rechecked (outside the later scan's reach)", result.not_rechecked))
    for title, items in sections:
        if items:
            lines.append(_findings_table(items, title=f"{title} ({len(items)})", with_status=False))
    counts = _text(f"{len(result.new)} new, {len(result.fixed)} fixed, {len(result.still_open)} still open",
                   "bold")
    if result.not_rechecked:
        counts.append(f", {len(result.not_rechecked)} not rechecked")
    lines.append(counts)
    return lines


@app.command("suppress")
def suppress(
    fingerprint: str | None = typer.Argument(None, help="The finding (fingerprint or unique prefix)."),
    reason: str = typer.Option(..., "--reason", help="Why this is accepted (required)."),
    expires: str | None = typer.Option(None, "--expires",
                                       help="ISO date/datetime or a duration from now: 30d, 12h, 2w."),
    author: str | None = typer.Option(None, "--author", help="Who decided (default: $USER)."),
    rule: str | None = typer.Option(None, "--rule", help="Suppress a rule (glob) instead of one finding."),
    target: str | None = typer.Option(None, "--target", help="With --rule: only targets matching this glob."),
    config: Path | None = ConfigOption,
) -> None:
    """Accept a finding (or a rule, optionally on some targets) with a reason and an optional expiry."""
    from cloudward.core.finding import utcnow
    from cloudward.store import parse_expiry

    until = parse_expiry(expires, utcnow()) if expires else None
    with _store(config) as store:
        info = store.suppress(fingerprint, rule_id=rule, target_pattern=target, reason=reason,
                              author=author or _default_author(), expires=until)
    _print(_suppression_line("suppressed", info))


def _suppression_line(verb: str, info: SuppressionInfo) -> Text:
    text = _text(f"{verb} {info.subject}", "bold")
    text.append_text(_text(f": {info.reason} (by {info.author}"))
    text.append(f", until {_when(info.expires)})" if info.expires else ", no expiry)")
    return text


@app.command("unsuppress")
def unsuppress(
    fingerprint: str | None = typer.Argument(None, help="The finding (fingerprint or unique prefix)."),
    rule: str | None = typer.Option(None, "--rule", help="Remove a rule suppression instead."),
    target: str | None = typer.Option(None, "--target", help="With --rule: the target glob it was given."),
    config: Path | None = ConfigOption,
) -> None:
    """Remove a suppression: the finding counts again."""
    with _store(config) as store:
        removed = store.unsuppress(fingerprint, rule_id=rule, target_pattern=target)
    _print(_text(f"removed {removed} suppression{'' if removed == 1 else 's'}"))


@app.command("suppressions")
def suppressions(
    all_: bool = typer.Option(False, "--all", help="Include expired suppressions."),
    format: str | None = FormatOption,
    config: Path | None = ConfigOption,
) -> None:
    """The suppressions in force (with --all, expired ones too)."""
    from rich import box
    from rich.table import Table

    from cloudward.core.finding import utcnow

    chosen = _format(format)
    with _store(config) as store:
        items = store.list_suppressions(include_expired=all_)
    if chosen == "json":
        _write_json({"schema": "cloudward/v1", "tool": {"name": "cloudward", "version": _tool_version()},
                     "suppressions": [s.to_dict() for s in items]})
        return
    now = utcnow()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in ("Subject", "Reason", "Author", "Created", "Expires"):
        table.add_column(column, overflow="fold")
    for s in items:
        expiry = _when(s.expires) if s.expires else "never"
        table.add_row(_text(s.subject), _text(s.reason), _text(s.author), _text(_when(s.created)),
                      _text(expiry + (" (expired)" if s.expired(now) else "")))
    _print(table if items else _text("No suppressions."))


@app.command("scans")
def scans(
    kind: str | None = typer.Option(None, "--kind", help="Only scans of this kind (exposure, audit, ...)."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many of the latest scans."),
    format: str | None = FormatOption,
    config: Path | None = ConfigOption,
) -> None:
    """Recorded scans, newest first."""
    from rich import box
    from rich.table import Table

    from cloudward.report._common import duration, shorten

    chosen = _format(format)
    with _store(config) as store:
        items = store.list_scans(kind=kind, limit=limit)
    if chosen == "json":
        _write_json({"schema": "cloudward/v1", "tool": {"name": "cloudward", "version": _tool_version()},
                     "scans": [s.to_dict() for s in items]})
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("Scan", no_wrap=True)
    table.add_column("Kind")
    table.add_column("Status")
    table.add_column("Started", no_wrap=True)
    table.add_column("Took", justify="right")
    table.add_column("Targets", overflow="fold")
    table.add_column("Findings", justify="right")
    table.add_column("Errors", justify="right")
    for s in items:
        table.add_row(
            _text(s.id[:SCAN_ID_WIDTH]), _text(s.kind), _text(s.status.value), _text(_when(s.started)),
            _text(duration(s.to_result())), _text(shorten(", ".join(s.targets), 60)),
            _text(s.finding_count), _text(len(s.errors)),
        )
    _print(table if items else _text("No scans recorded yet."))
