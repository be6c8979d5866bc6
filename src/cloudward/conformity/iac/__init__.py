"""Infrastructure as code: Terraform (HCL with variables files, count/for_each and downloaded
modules; plan JSON), Kubernetes manifests (Kustomize overlays rendered), kubelet and
control-plane configuration, and docker-compose files, judged before they are applied.

Parsers turn files into observations (a subject, flat facts, a file and line); YAML rules with
`match.engine: iac` judge them in the shared subject language (`engines/subject_rules.py`).
"""

from __future__ import annotations

from cloudward.conformity.iac.scan import ENGINE, MAX_BYTES, ExtraJudge, scan_paths
from cloudward.engines.subject_rules import validate_rule

__all__ = ["ENGINE", "MAX_BYTES", "ExtraJudge", "scan_paths", "validate_rule"]
