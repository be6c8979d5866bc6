"""Rules over described subjects: `match.subject` selects what a rule is about, `match.when` decides.

Host audits (an sshd config, a cron line, a process) and image scans (an image config, a file in a
layer) both describe things as a subject name plus facts, and judge them with the same match block:

    match:
      engine: host | image          # which capability's observations the rule reads
      subject: sshd                 # the subject it applies to
      when: {fact: password_authentication, equals: "yes"}   # engines/conditions.py
      evidence: [password_authentication, sources]         # facts copied into the finding

One evaluator keeps the two capabilities' rule languages identical, so a rule author learns it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.engines.conditions import MISSING, Predicate, compile_condition, lookup

__all__ = ["CompiledRule", "compile_rules", "evaluate", "validate_match", "validate_rule"]

def validate_match(rule: Rule, selector: str = "subject") -> None:
    """Load-time check of a match block that picks what it judges by `selector` (`subject` for host
    and image rules, `service` for exposure rules) and decides with `when` (raises ValueError)."""
    match = rule.match
    unknown = set(match) - {"engine", selector, "when", "evidence"}
    if unknown:
        raise ValueError(f"unknown match keys: {', '.join(sorted(unknown))}")
    if not isinstance(match.get(selector), str) or not match[selector]:
        raise ValueError(f"match.{selector} must name a {selector}")
    if "when" not in match:
        raise ValueError("match.when is required")
    compile_condition(match["when"])
    evidence = match.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise ValueError("match.evidence must be a list of fact names")


def validate_rule(rule: Rule) -> None:
    """Load-time check of a subject rule's match block (raises ValueError)."""
    validate_match(rule, "subject")


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    subject: str
    predicate: Predicate
    evidence: tuple[str, ...]


def compile_rules(rules: Iterable[Rule], engine: str) -> dict[str, list[CompiledRule]]:
    """The rules of `engine` grouped by subject, so each observation meets only the rules about it."""
    grouped: dict[str, list[CompiledRule]] = {}
    for rule in rules:
        if rule.match.get("engine") != engine:
            continue
        compiled = CompiledRule(rule, rule.match["subject"], compile_condition(rule.match["when"]),
                                tuple(rule.match.get("evidence", ())))
        grouped.setdefault(compiled.subject, []).append(compiled)
    return grouped


def _evidence(facts: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = lookup(facts, name)
        if value is not MISSING:
            out[name] = value
    return out


def evaluate(subject: str, facts: Mapping[str, Any], rules: Mapping[str, list[CompiledRule]], target: Target, *,
             location: Mapping[str, Any], key: str) -> list[Finding]:
    """A Finding for every rule about `subject` whose condition holds on `facts`; `key` is what tells
    this subject apart from others of its kind (a path, a user), never a line number."""
    findings = []
    for compiled in rules.get(subject, ()):
        if not compiled.predicate(facts):
            continue
        rule = compiled.rule
        findings.append(Finding(
            rule_id=rule.id,
            title=rule.title,
            severity=rule.severity,
            category=rule.category,
            target=target,
            location=dict(location),
            evidence=_evidence(facts, compiled.evidence),
            description=rule.description,
            remediation=rule.remediation,
            references=list(rule.references),
            attack=list(rule.attack),
            compliance=dict(rule.compliance),
            tags=list(rule.tags),
            key=f"{subject}\x1f{key}",
        ))
    return findings
