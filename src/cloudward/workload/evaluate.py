"""Judge host observations with the workload rules (`match.engine: host`).

The match language (subject, when, evidence) is shared with image scans and lives in
`engines/subject_rules.py`; this module only turns a HostObservation into its location and key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule
from cloudward.engines import subject_rules
from cloudward.engines.subject_rules import CompiledRule, validate_rule
from cloudward.workload.observation import HostObservation

__all__ = ["CompiledRule", "compile_rules", "evaluate", "validate_rule"]


def compile_rules(rules: Iterable[Rule]) -> dict[str, list[CompiledRule]]:
    """Host rules grouped by subject."""
    return subject_rules.compile_rules(rules, "host")


def evaluate(observation: HostObservation, rules: dict[str, list[CompiledRule]], target: Target,
             root: str = "/") -> list[Finding]:
    location: dict[str, Any] = {"root": root}
    if observation.path is not None:
        location["path"] = observation.path
    if observation.line is not None:
        location["line"] = observation.line
    return subject_rules.evaluate(observation.subject, observation.facts, rules, target, location=location,
                                  key=observation.key or observation.path or "")
