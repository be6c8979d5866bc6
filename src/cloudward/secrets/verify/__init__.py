"""Ask a credential's provider who it belongs to (`secrets scan --verify`): opt-in, never automatic.

A verifier is registered for the rule ids whose findings it can check. During a scan it is given
every confirmed match of one blob and picks the values it needs (`collect`), e.g. the AWS verifier
pairs a secret access key with the nearest access key ID. The values are `Secret` objects (their
repr/str are masked) that live only in memory for the duration of the call; `verify` returns a
`VerifyResult` whose identity holds who the key is (account, ARN), never the key itself.

Adding a provider: subclass `Verifier`, set `rule_ids`, implement `collect` and `verify`, and
decorate the class with `@register` (the built-in ones are registered lazily). `prepare` makes one
configured instance per class for each scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from cloudward.core.finding import Finding
from cloudward.core.severity import Severity
from cloudward.secrets.engine import Secret, SecretMatch

__all__ = [
    "MAX_MESSAGE",
    "Verifier",
    "VerifyCache",
    "VerifyResult",
    "apply_result",
    "prepare",
    "register",
    "registered",
    "scrub",
    "verifier_for",
]

#: Longest verification_error message put on a finding.
MAX_MESSAGE = 200

Status = Literal["valid", "invalid", "error"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The provider's answer. `identity` is who the credential is (never the credential)."""

    status: Status
    identity: dict[str, str] = field(default_factory=dict)
    message: str = ""


class Verifier:
    """One provider's check. Subclasses set `rule_ids` and implement `collect` and `verify`."""

    rule_ids: ClassVar[tuple[str, ...]] = ()

    def configure(self, *, endpoint: str | None = None) -> None:
        """Per-scan options (e.g. `--verify-endpoint`)."""

    def collect(self, match: SecretMatch, blob_matches: Sequence[SecretMatch]) -> dict[str, Secret] | None:
        """The values `verify` needs for `match` (taken from the same blob), or None to skip it."""
        raise NotImplementedError

    def verify(self, secret_values: Mapping[str, Secret]) -> VerifyResult:
        raise NotImplementedError


_REGISTRY: dict[str, type[Verifier]] = {}
_BUILTINS_LOADED = False


def register(cls: type[Verifier]) -> type[Verifier]:
    """Make `cls` the verifier of each of its rule ids (a later registration replaces); usable as a
    class decorator. Instances are made per scan by `prepare`, so scans never share state."""
    for rule_id in cls.rule_ids:
        _REGISTRY[rule_id] = cls
    return cls


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from cloudward.secrets.verify.aws import AwsVerifier

        for rule_id in AwsVerifier.rule_ids:
            _REGISTRY.setdefault(rule_id, AwsVerifier)


def registered() -> dict[str, type[Verifier]]:
    _load_builtins()
    return dict(_REGISTRY)


def verifier_for(rule_id: str) -> type[Verifier] | None:
    _load_builtins()
    return _REGISTRY.get(rule_id)


def scrub(message: str, secret_values: Mapping[str, Secret]) -> str:
    """A message safe to show: any raw value replaced by its mask, one line, bounded length."""
    text = " ".join(str(message).split())
    for value in secret_values.values():
        raw = value.reveal().decode("utf-8", "replace")
        if raw:
            text = text.replace(raw, value.masked)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return text


def apply_result(finding: Finding, result: VerifyResult, secret_values: Mapping[str, Secret]) -> None:
    """Record the answer on the finding: `verified` + identity, or `verification_error`."""
    evidence: dict[str, Any] = dict(finding.evidence)
    if result.status == "error":
        evidence["verification_error"] = scrub(result.message or "verification failed", secret_values)
    else:
        evidence["verified"] = result.status == "valid"
        for name, value in result.identity.items():
            evidence[name] = scrub(value, secret_values)
        if result.status == "valid":
            finding.severity = Severity.CRITICAL
    finding.evidence = evidence


def prepare(endpoint: str | None = None) -> dict[str, Verifier]:
    """Every registered verifier, configured for this scan (raises UsageError on a bad option or a
    missing optional dependency), keyed by rule id."""
    instances: dict[type[Verifier], Verifier] = {}
    verifiers: dict[str, Verifier] = {}
    for rule_id, cls in registered().items():
        if cls not in instances:
            instances[cls] = cls()
            instances[cls].configure(endpoint=endpoint)
        verifiers[rule_id] = instances[cls]
    return verifiers


class VerifyCache:
    """One provider call per distinct credential per scan (the same key pair is often committed in
    many files); lives only as long as the scan."""

    __slots__ = ("_answers", "verifiers")

    def __init__(self, verifiers: Mapping[str, Verifier]) -> None:
        self.verifiers = verifiers
        self._answers: dict[tuple[int, tuple[tuple[str, Secret], ...]], VerifyResult] = {}

    def __repr__(self) -> str:
        return f"VerifyCache({len(self._answers)} answers)"

    def apply(self, findings: Sequence[Finding], matches: Sequence[SecretMatch]) -> None:
        """Verify the blob's matches that have a verifier; findings[i] belongs to matches[i]."""
        for finding, match in zip(findings, matches, strict=True):
            verifier = self.verifiers.get(match.rule_id)
            if verifier is None or match.suppressed is not None:
                continue
            values = verifier.collect(match, matches)
            if not values:
                continue
            cache_key = (id(verifier), tuple(sorted(values.items(), key=lambda kv: kv[0])))
            result = self._answers.get(cache_key)
            if result is None:
                try:
                    result = verifier.verify(values)
                except Exception as exc:  # a verifier bug must not cost the scan its findings
                    result = VerifyResult("error", message=f"verifier failed: {type(exc).__name__}")
                self._answers[cache_key] = result
            apply_result(finding, result, values)
