"""The probes the scanner knows, in the order they are tried when no port hint applies.

Modules are imported on first use so `cloudward --version` and `rules list` stay fast. Each module
exports `PROBES`, a list of probe instances.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from cloudward.exposure.probes.base import Probe

PROBE_MODULES = (
    "cloudward.exposure.probes.ssh",
    "cloudward.exposure.probes.redis",
    "cloudward.exposure.probes.postgres",
    "cloudward.exposure.probes.mongodb",
    "cloudward.exposure.probes.docker",
    "cloudward.exposure.probes.etcd",
    "cloudward.exposure.probes.kubernetes",
    "cloudward.exposure.probes.weave_scope",
    "cloudward.exposure.probes.jupyter",
    "cloudward.exposure.probes.elasticsearch",
    "cloudward.exposure.probes.registry_v2",
)


@cache
def all_probes() -> tuple[Probe, ...]:
    probes: list[Probe] = []
    for name in PROBE_MODULES:
        probes.extend(import_module(name).PROBES)
    return tuple(probes)
