"""Judge host observations with the workload rules: `match.subject` selects, `match.when` decides.

A host rule's match block:

    match:
      engine: host
      subject: sshd                 # the HostObservation.subject it applies to
      when: {fact: password_authentication, equals: "yes"}   # engines/conditions.py
      evidence: [password_authentication, sources]         # facts copied into the finding
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.engines.conditions import MISSING, Predicate, compile_condition, lookup
from cloudward.workload.observation import HostObservation

__all__ = ["CompiledRule", "compile_rules", "evaluate", "validate_rule"]

_MATCH_KEYS = {"engine", "subject", "when", "evidence"}


def validate_rule(rule: Rule) -> None:
    """Load-time check of a host rule's match block (raises ValueError)."""
    match = rule.match
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        raise ValueError(f"unknown match keys: {', '.join(sorted(unknown))}")
    if not isinstance(match.get("subject"), str) or not match["subject"]:
        raise ValueError("match.subject must name a subject")
    if "when" not in match:
        raise ValueError("match.when is required")
    compile_condition(match["when"])
    evidence = match.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise ValueError("match.evidence must be a list of fact names")


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    subject: str
    predicate: Predicate
    evidence: tuple[str, ...]


def compile_rules(rules: Iterable[Rule]) -> dict[str, list[CompiledRule]]:
    """Host rules grouped by subject, so each observation meets only the rules about it."""
    grouped: dict[str, list[CompiledRule]] = {}
    for rule in rules:
        if rule.match.get("engine") != "host":
            continue
        compiled = CompiledRule(rule, rule.match["subject"], compile_condition(rule.match["when"]),
                                tuple(rule.match.get("evidence", ())))
        grouped.setdefault(compiled.subject, []).append(compiled)
    return grouped


def _evidence(observation: HostObservation, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = lookup(observation.facts, name)
        if value is not MISSING:
            out[name] = value
    return out


def evaluate(observation: HostObservation, rules: dict[str, list[CompiledRule]], target: Target,
             root: str = "/") -> list[Finding]:
    findings = []
    for compiled in rules.get(observation.subject, ()):
        if not compiled.predicate(observation.facts):
            continue
        rule = compiled.rule
        location: dict[str, Any] = {"root": root}
        if observation.path is not None:
            location["path"] = observation.path
        if observation.line is not None:
            location["line"] = observation.line
        findings.append(Finding(
            rule_id=rule.id,
            title=rule.title,
            severity=rule.severity,
            category=rule.category,
            target=target,
            location=location,
            evidence=_evidence(observation, compiled.evidence),
            description=rule.description,
            remediation=rule.remediation,
            references=list(rule.references),
            attack=list(rule.attack),
            compliance=dict(rule.compliance),
            tags=list(rule.tags),
            key=f"{observation.subject}\x1f{observation.key or observation.path or ''}",
        ))
    return findings
