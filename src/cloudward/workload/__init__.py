"""Workload Security: hardening audit, compromise hunt, live processes, integrity monitoring, logs.

The host is read from a root directory (`/` or a mounted snapshot) by collectors that only
describe what they see (`HostObservation`); YAML rules in `rules/` judge those facts.
"""

from cloudward.workload.audit import run_audit
from cloudward.workload.observation import HostContext, HostObservation
from cloudward.workload.root import HostRoot

__all__ = ["HostContext", "HostObservation", "HostRoot", "run_audit"]
