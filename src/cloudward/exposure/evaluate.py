"""Judge observations with the exposure rules: `match.service` selects, `match.when` decides.

An exposure rule's match block:

    match:
      engine: exposure
      service: redis            # the Observation.service it applies to ("*" for any)
      when: {fact: auth_required, equals: false}   # a condition (engines/conditions.py)
      evidence: [version, role] # facts copied into the finding's evidence
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.engines.conditions import MISSING, Predicate, compile_condition, lookup
from cloudward.engines.subject_rules import validate_match
from cloudward.exposure.probes.base import Observation


def validate_rule(rule: Rule) -> None:
    """Load-time check of an exposure rule's match block (raises ValueError)."""
    validate_match(rule, "service")


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    service: str
    predicate: Predicate
    evidence: tuple[str, ...]


def compile_rules(rules: Iterable[Rule]) -> list[CompiledRule]:
    return [
        CompiledRule(r, r.match["service"], compile_condition(r.match["when"]), tuple(r.match.get("evidence", ())))
        for r in rules
        if r.match.get("engine") == "exposure"
    ]


def _evidence(observation: Observation, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"service": observation.service, "tls": observation.tls}
    for name in names:
        value = lookup(observation.facts, name)
        if value is not MISSING:
            out[name] = value
    return out


def evaluate(observation: Observation, rules: list[CompiledRule]) -> list[Finding]:
    findings = []
    for compiled in rules:
        if compiled.service not in ("*", observation.service):
            continue
        if not compiled.predicate(observation.facts):
            continue
        rule = compiled.rule
        findings.append(
            Finding(
                rule_id=rule.id,
                title=rule.title,
                severity=rule.severity,
                category=rule.category,
                target=Target(kind="service", name=observation.endpoint),
                location={"host": observation.host, "port": observation.port, "protocol": "tcp",
                          "tls": observation.tls},
                evidence=_evidence(observation, compiled.evidence),
                description=rule.description,
                remediation=rule.remediation,
                references=list(rule.references),
                attack=list(rule.attack),
                compliance=dict(rule.compliance),
                tags=list(rule.tags),
            )
        )
    return findings
