"""The HTML report: self-contained, complete, and inert whatever a scanned service sent."""

from __future__ import annotations

import io
from html.parser import HTMLParser

from cloudward.core.scan import ScanResult
from cloudward.report import write_report

from .conftest import HOSTILE, RAW_SECRET


class Page(HTMLParser):
    """Collects what a browser would act on: elements, attributes, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def render(result: ScanResult) -> str:
    stream = io.StringIO()
    write_report(result, "html", stream)
    return stream.getvalue()


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_hostile_evidence_is_inert(result):
    text = render(result)
    page = parse(text)
    names = [tag for tag, _ in page.tags]
    assert "script" not in names and "img" not in names and "iframe" not in names
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        href = attrs.get("href")
        if href is not None:
            assert href.startswith(("https://", "http://")), href  # javascript: reference not linked
    body = "".join(page.text)
    # the banner shows as text, its markup visible, its control characters printed as escapes
    assert '<script>alert("pwned")</script>"><img src=x onerror=alert(1)>' in body
    assert "\\x1b[2J\\x1b[31m[bold red]boom[/] \\u202etxt.exe \\udcff" in body
    assert "\x1b" not in text and "\u202e" not in text
    assert "javascript:alert(1)" in body  # shown, not linked


def test_self_contained_with_a_strict_content_security_policy(result):
    text = render(result)
    assert text.isascii()
    page = parse(text)
    for tag, attrs in page.tags:
        assert tag not in {"link", "script", "iframe", "object", "embed", "base"}
        assert "src" not in attrs
    csp = next(
        a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "@import" not in text and "url(" not in text


def test_contents(result):
    page = parse(render(result))
    body = "".join(page.text)
    for expected in (
        "5c0ffee5",
        "exposure",
        "127.0.0.0/29",
        "2025-01-02 03:04:05 UTC",
        "12.0s",
        "6 findings",
        "redis.unauthenticated",
        "service:[::1]:6379",
        "path:config/app settings.env:12",
        "Anyone who reaches the port",
        "bind Redis to localhost",
        "T1190",
        "Exploit Public-Facing Application",
        "cis-redis",
        "Scan errors (2)",
        "TLS handshake timed out",
        "Inventory (2)",
        "nginx/1.25.3",
    ):
        assert expected in body, expected
    assert "connection reset by peer <b>mid-banner</b>" in body
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    assert "https://attack.mitre.org/techniques/T1110/001/" in hrefs
    assert "https://redis.io/docs/latest/operate/oss_and_stack/management/security/" in hrefs


def test_findings_are_expandable_sorted_and_filterable(result):
    page = parse(render(result))
    findings = [a for t, a in page.tags if t == "details" and "finding" in (a.get("class") or "")]
    assert [a["data-severity"] for a in findings] == ["critical", "critical", "high", "medium", "low", "info"]
    checkboxes = [a["id"] for t, a in page.tags if t == "input" and a.get("type") == "checkbox"]
    assert checkboxes == ["show-critical", "show-high", "show-medium", "show-low", "show-info"]


def test_severity_counts(result):
    page = parse(render(result))
    labels = []
    for tag, attrs in page.tags:
        if tag == "label":
            labels.append(attrs["class"])
    assert labels[0].startswith("chip sev-critical")
    text = " ".join(" ".join(page.text).split())
    assert "2 critical 1 high 1 medium 1 low 1 info" in text


def test_no_raw_secret(result):
    assert RAW_SECRET not in render(result)


def test_empty_scan():
    body = "".join(parse(render(ScanResult(kind="secrets", id="nothing"))).text)
    assert "No findings." in body and "0 findings" in body and "Scan errors" not in body


def test_hostile_inventory_and_errors_are_escaped(result):
    result.add_error("<svg onload=alert(1)>", HOSTILE, "probe")
    page = parse(render(result))
    assert "svg" not in [tag for tag, _ in page.tags]
    assert "<svg onload=alert(1)>" in "".join(page.text)
