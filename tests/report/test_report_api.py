"""The public seam: write_report dispatches, rejects unknown formats, and is deterministic."""

from __future__ import annotations

import io

import pytest

from cloudward.core.errors import UsageError
from cloudward.core.scan import ScanResult
from cloudward.report import FORMATS, write_report
from cloudward.report._common import ordered


def render(result: ScanResult, fmt: str) -> str:
    stream = io.StringIO()
    write_report(result, fmt, stream)
    return stream.getvalue()


def test_formats_are_the_ones_the_cli_offers():
    from cloudward.cli.common import FORMATS as CLI_FORMATS

    assert set(FORMATS) == set(CLI_FORMATS)


def test_unknown_format_is_a_usage_error(result):
    with pytest.raises(UsageError, match="unknown report format 'xml'"):
        write_report(result, "xml", io.StringIO())


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_scan_same_bytes_whatever_the_arrival_order(fmt, result, shuffled, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    first = render(result, fmt)
    assert first == render(result, fmt)
    assert first == render(shuffled, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_writers_do_not_reorder_the_callers_result(fmt, shuffled):
    before = [f.fingerprint for f in shuffled.findings]
    render(shuffled, fmt)
    assert [f.fingerprint for f in shuffled.findings] == before


def test_order_is_severity_desc_then_rule_then_target(shuffled):
    keys = [(f.severity.value, f.rule_id, str(f.target)) for f in ordered(shuffled).findings]
    assert keys == [
        ("critical", "redis.unauthenticated", "service:127.0.0.1:6379"),
        ("critical", "redis.unauthenticated", "service:[::1]:6379"),
        ("high", "secret.aws_access_key", "path:config/app settings.env"),
        ("medium", "ssh.password_authentication_enabled", "service:127.0.0.1:22"),
        ("low", "docker.image_outdated_base", "image:registry.local/app@sha256:0123abcd"),
        ("info", "http.server_banner", "service:127.0.0.1:8080"),
    ]
    assert [e.target for e in ordered(shuffled).errors] == ["127.0.0.3:443", "127.0.0.5:2375"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_scan_renders(fmt):
    text = render(ScanResult(kind="exposure", id="empty"), fmt)
    assert "empty" in text
