"""Upload scanners for multipart file parts, composed at the edge.

`content_scanner()` is the shared content judge (YARA rules, hash indicators; `engines/content.py`).
`secret_scanner(scan_bytes)` adapts the secret scanner's public `scan_bytes` — passed in by the
caller, because capabilities do not import each other::

    import cloudward.secrets
    from cloudward.appsec import ASGIMiddleware
    from cloudward.appsec.uploads import content_scanner, secret_scanner

    app = ASGIMiddleware(app, mode="block",
                         upload_scanners=[content_scanner(), secret_scanner(cloudward.secrets.scan_bytes)])

Secret findings carry the secret's HMAC and a redacted preview, never the secret itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cloudward.appsec.engine import UploadScanner
from cloudward.core.finding import Finding, Target
from cloudward.core.rules import load_rules

__all__ = ["content_scanner", "secret_scanner"]

ScanBytes = Callable[..., list[Finding]]


def content_scanner(*, use_yara: bool = True, use_iocs: bool = True) -> UploadScanner:
    from cloudward.engines import subject_rules
    from cloudward.engines.content import load_content_judge

    rules = load_rules(["cloudward.data"], validators={"content": subject_rules.validate_rule})
    judge, _problems = load_content_judge(list(rules), use_yara=use_yara, use_iocs=use_iocs)

    def scan(data: bytes, name: str) -> list[Finding]:
        location: Mapping[str, Any] = {"file": name}
        return judge.bytes_findings(data, name, Target(kind="object", name=f"upload:{name}"), location)

    return scan


def secret_scanner(scan_bytes: ScanBytes) -> UploadScanner:
    def scan(data: bytes, name: str) -> list[Finding]:
        return scan_bytes(data, f"upload:{name}", target_kind="object")

    return scan
