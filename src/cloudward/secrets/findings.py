"""SecretMatch -> the core Finding: metadata from the rule, a masked value, a keyed fingerprint.

The raw secret goes into exactly one place, the HMAC: `key = secret_hmac(secret, installation key)`.
The finding's fingerprint hashes rule id + target + that key, so it survives line moves
(detect-secrets style: file + secret hash + type) and never lets the store reveal the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudward.core.finding import Finding, Target
from cloudward.core.redact import secret_hmac
from cloudward.secrets.engine import SecretMatch


def evidence(match: SecretMatch) -> dict[str, Any]:
    """What a person needs to find and judge the secret, with the secret itself masked."""
    out: dict[str, Any] = {
        "masked": match.secret.masked,
        "length": len(match.secret),
        "entropy": round(match.entropy, 2),
    }
    out.update(match.context)
    if match.suppressed is not None:
        out["suppressed"] = match.suppressed
    return out


def to_finding(
    match: SecretMatch,
    origin: str,
    hmac_key: bytes,
    *,
    target_kind: str = "path",
    location: Mapping[str, Any] | None = None,
) -> Finding:
    rule = match.rule.rule
    where: dict[str, Any] = dict(location or {})
    where.update(line=match.line, column=match.column)
    if match.end_line != match.line:
        where["end_line"] = match.end_line
    return Finding(
        rule_id=rule.id,
        title=rule.title,
        severity=match.severity,
        category=rule.category,
        target=Target(kind=target_kind, name=origin),
        location=where,
        evidence=evidence(match),
        description=rule.description,
        remediation=rule.remediation,
        references=list(rule.references),
        attack=list(rule.attack),
        compliance={k: list(v) for k, v in rule.compliance.items()},
        tags=list(match.tags),
        key=secret_hmac(match.secret.reveal(), hmac_key),
    )
