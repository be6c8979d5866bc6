"""Report writers: one ScanResult in, one document out, in the format the reader asked for.

    from cloudward.report import write_report
    write_report(result, "sarif", sys.stdout)

Every writer orders findings the same way (severity desc, rule id, target) and errors by target, so
the same scan always yields the same bytes. Writers are imported on demand: `--format json` never
pays for rich, and this package imports nothing of cloudward but `core` (import-linter checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from cloudward.core.errors import UsageError
from cloudward.core.scan import ScanResult

__all__ = ["FORMATS", "write_report"]

FORMATS: tuple[str, ...] = ("table", "json", "sarif", "html")

Writer = Callable[[ScanResult, TextIO], None]


def write_report(result: ScanResult, fmt: str, stream: TextIO) -> None:
    """Write `result` to `stream` as `fmt` (one of FORMATS); UsageError for an unknown format."""
    _writer(fmt)(result, stream)


def _writer(fmt: str) -> Writer:
    if fmt == "table":
        from cloudward.report.table import write_table

        return write_table
    if fmt == "json":
        from cloudward.report.json_report import write_json

        return write_json
    if fmt == "sarif":
        from cloudward.report.sarif import write_sarif

        return write_sarif
    if fmt == "html":
        from cloudward.report.html import write_html

        return write_html
    raise UsageError(f"unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
