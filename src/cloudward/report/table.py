"""The terminal report: a rich table of findings, a severity summary, errors and inventory.

Colour only when the stream is a terminal: `cloudward ... > out.txt` or a CI log must not fill with
escape codes, even when FORCE_COLOR is set for other tools. Every value that came from a scanned
system goes in as `rich.text.Text` (never parsed as markup) after `visible()` has escaped its
control characters, so a banner cannot restyle or repaint the operator's terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloudward.core.finding import Finding
from cloudward.core.scan import ScanResult
from cloudward.core.severity import Severity
from cloudward.report._common import (
    SEVERITIES,
    compact,
    duration,
    evidence_pairs,
    human_time,
    inventory_columns,
    ordered,
    severity_counts,
    shorten,
    target_label,
    visible,
)

SEVERITY_STYLE: dict[Severity, str] = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}

# Width used when the stream is not a terminal and COLUMNS does not say otherwise: rich's own
# default of 80 folds a five-column table into an unreadable ribbon in files and CI logs.
FILE_WIDTH = 120
EVIDENCE_ITEMS = 4
SEVERITY_WIDTH = 8
COLUMN_GAP = 2
MIN_FINDING_WIDTH = 36


def write_table(result: ScanResult, stream: TextIO) -> None:
    console = _console(stream)
    if console.is_terminal:
        _render(console, ordered(result))
        return
    # rich pads every line to the table width; in a file that is only trailing whitespace.
    with console.capture() as capture:
        _render(console, ordered(result))
    stream.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))


def _render(console: Console, result: ScanResult) -> None:
    console.print(_header(result))
    if result.findings:
        console.print(_findings_table(result.findings, console.width))
    else:
        console.print(Text("No findings.", style="green"))
    console.print(_summary(result.findings))
    if result.errors:
        console.print()
        console.print(_errors_table(result))
    if result.inventory:
        console.print()
        console.print(_inventory_table(result.inventory))


def _console(stream: TextIO) -> Console:
    tty = _isatty(stream)
    width = None if tty or os.environ.get("COLUMNS") else FILE_WIDTH
    return Console(
        file=stream,
        force_terminal=tty,
        force_interactive=False,
        width=width,
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=False,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or exotic streams: treat as a file
        return False


def _header(result: ScanResult) -> Text:
    text = Text()
    text.append(f"cloudward {visible(result.kind)} scan ", style="bold")
    text.append(visible(result.id), style="dim")
    text.append(f"  {result.status.value}")
    text.append(f"  started {human_time(result.started)}, took {duration(result)}")
    targets = [visible(t) for t in result.targets]
    if targets:
        shown = ", ".join(targets[:5]) + (f" (+{len(targets) - 5} more)" if len(targets) > 5 else "")
        text.append(f"\ntargets: {shown}")
    return text


def _severity_text(severity: Severity) -> Text:
    return Text(severity.value.upper(), style=SEVERITY_STYLE[severity])


def _findings_table(findings: list[Finding], width: int) -> Table:
    """Severity | Rule | Target | Finding (title over its key evidence), or, when the terminal is
    too narrow for identifiers on one line, Severity | Finding with rule and target folded in."""
    rule_width = _fit(f.rule_id for f in findings)
    target_width = _fit(target_label(f) for f in findings)
    wide = width - SEVERITY_WIDTH - rule_width - target_width - 3 * COLUMN_GAP >= MIN_FINDING_WIDTH
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", expand=True)
    table.add_column("Severity", no_wrap=True, width=SEVERITY_WIDTH)
    if wide:
        table.add_column("Rule", overflow="fold", width=rule_width)
        table.add_column("Target", overflow="fold", width=target_width)
    table.add_column("Finding", overflow="fold", ratio=1)
    for finding in findings:
        cells: list[Text] = [_severity_text(finding.severity)]
        if wide:
            cells += [Text(visible(finding.rule_id)), Text(visible(target_label(finding)))]
        cells.append(_finding_text(finding, with_identity=not wide))
        table.add_row(*cells)
    return table


def _fit(values: Iterable[str], cap: int = 40) -> int:
    return min(max((len(visible(v)) for v in values), default=0), cap)


def _finding_text(finding: Finding, with_identity: bool) -> Text:
    text = Text(visible(finding.title))
    if with_identity:
        text.append("\n")
        text.append(visible(finding.rule_id), style="bold")
        text.append("  ")
        text.append(visible(target_label(finding)))
    evidence = _evidence_text(finding.evidence)
    if evidence:
        text.append("\n")
        text.append_text(evidence)
    return text


def _evidence_text(evidence: dict[str, Any]) -> Text:
    text = Text()
    for index, (key, value) in enumerate(evidence_pairs(evidence, limit=EVIDENCE_ITEMS)):
        if index:
            text.append(", ")
        text.append(visible(key), style="dim")
        text.append("=")
        text.append(visible(value))
    if len(evidence) > EVIDENCE_ITEMS:
        text.append(f" (+{len(evidence) - EVIDENCE_ITEMS})", style="dim")
    return text


def _summary(findings: list[Finding]) -> Text:
    counts = severity_counts(findings)
    total = sum(counts.values())
    text = Text(f"{total} finding{'' if total == 1 else 's'}: ", style="bold")
    for index, severity in enumerate(SEVERITIES):
        if index:
            text.append(", ")
        style = SEVERITY_STYLE[severity] if counts[severity] else "dim"
        text.append(f"{counts[severity]} {severity.value}", style=style)
    return text


def _errors_table(result: ScanResult) -> Table:
    table = Table(
        title=f"Scan errors ({len(result.errors)})",
        title_justify="left",
        title_style="bold red",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
    )
    table.add_column("Target", overflow="fold")
    table.add_column("Stage", no_wrap=True)
    table.add_column("Message", overflow="fold")
    for error in result.errors:
        table.add_row(
            Text(visible(error.target)), Text(visible(error.stage or "-")), Text(visible(error.message))
        )
    return table


def _inventory_table(inventory: list[dict[str, Any]]) -> Table:
    columns = inventory_columns(inventory)
    table = Table(
        title=f"Inventory ({len(inventory)})",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
    )
    for column in columns:
        table.add_column(Text(visible(column)), overflow="fold")
    for entry in inventory:
        cells = {str(key): value for key, value in entry.items()}
        table.add_row(
            *(Text(visible(shorten(compact(cells[c]), 120))) if c in cells else Text("") for c in columns)
        )
    return table
