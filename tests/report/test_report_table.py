"""The terminal table: readable in a terminal, clean in a file or pipe, immune to hostile banners."""

from __future__ import annotations

import io

import pytest

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult
from cloudward.report import write_report

from .conftest import RAW_SECRET


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    for name in ("COLUMNS", "LINES", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    # Set on purpose: colour must follow the stream, not a global switch meant for other tools.
    monkeypatch.setenv("FORCE_COLOR", "1")


def render(result: ScanResult, stream: io.StringIO | None = None) -> str:
    stream = stream if stream is not None else io.StringIO()
    write_report(result, "table", stream)
    return stream.getvalue()


def test_file_output_has_no_escape_codes_and_no_trailing_blanks(result):
    text = render(result)
    assert "\x1b" not in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert max(len(line) for line in text.splitlines()) <= 120


def test_terminal_output_is_coloured(result):
    text = render(result, FakeTerminal())
    assert "\x1b[" in text
    # the hostile banner's own escape is still printed as text, never emitted
    assert "\x1b[2J" not in text and "\x1b[31m[bold red]" not in text


def test_contents(result):
    text = render(result)
    lines = text.splitlines()
    assert lines[0].startswith("cloudward exposure scan 5c0ffee5  completed  started 2025-01-02 03:04:05 UTC")
    for rule in (
        "redis.unauthenticated",
        "secret.aws_access_key",
        "ssh.password_authentication_enabled",
        "docker.image_outdated_base",
        "http.server_banner",
    ):
        assert rule in text
    assert "service:[::1]:6379" in text and "path:config/app settings.env:12" in text
    assert "version=7.2.4" in text
    assert "6 findings: 2 critical, 1 high, 1 medium, 1 low, 1 info" in text
    errors_at = text.index("Scan errors (2)")
    assert errors_at > text.index("6 findings")
    assert text.index("127.0.0.3:443") < text.index("127.0.0.5:2375")
    assert "Inventory (2)" in text and "endpoint" in text


def test_rows_follow_severity_order(result):
    text = render(result)
    positions = [text.index(word) for word in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")]
    assert positions == sorted(positions)


def test_hostile_banner_cannot_restyle_or_repaint():
    banner = "\x1b[2J\x1b]0;owned\x07[bold red]boom[/] [link=https://evil.test]x[/link] \u202eexe.txt \udcff"
    finding = Finding(
        rule_id="ssh.banner",
        title="[blink]T[/blink]",
        severity="info",
        category="exposure",
        target=Target(kind="service", name="127.0.0.1:22"),
        evidence={"banner": banner},
    )
    result = ScanResult(kind="exposure", id="h", findings=[finding], inventory=[{"banner": banner}])
    for stream in (io.StringIO(), FakeTerminal()):
        text = render(result, stream)
        assert "\x1b[2J" not in text and "\x1b]0;" not in text and "\x07" not in text
        assert "\u202e" not in text and "\udcff" not in text
        assert "\x1b]8;" not in text  # no hyperlink escape from [link=...] markup
    flat = "".join(render(result).split())
    assert "[blink]T[/blink]" in flat  # markup is shown, not interpreted
    assert "\\x1b[2J\\x1b]0;owned\\x07[boldred]boom[/]" in flat
    assert "\\u202eexe.txt" in flat


def test_narrow_terminal_keeps_identifiers_whole(result, monkeypatch):
    monkeypatch.setenv("COLUMNS", "72")
    text = render(result)
    assert "ssh.password_authentication_enabled" in text
    assert max(len(line) for line in text.splitlines()) <= 72


def test_empty_scan():
    text = render(ScanResult(kind="exposure", id="x"))
    assert "No findings." in text and "0 findings" in text and "Scan errors" not in text


def test_no_raw_secret(result):
    assert RAW_SECRET not in render(result)
