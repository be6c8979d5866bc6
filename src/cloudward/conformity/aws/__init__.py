"""The AWS account posture scan ("cloudward's answer to Prowler").

`session` authenticates (credential chain, profile, assumed role, endpoint, retries); `collectors/`
read each service once per region into plain resource records; `scan` links facts across services
and judges every record with the YAML rules in `rules/` (engine `aws`, subject = resource type, in
the shared condition language). Probes are read-only.
"""

from __future__ import annotations

from cloudward.core.rules import Rule
from cloudward.engines.subject_rules import validate_match


def validate_rule(rule: Rule) -> None:
    """Load-time check of an `aws` rule: `subject` names a resource type, `when` decides."""
    validate_match(rule, "subject")


__all__ = ["validate_rule"]
