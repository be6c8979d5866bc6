"""Host collectors: each module here with a `collect(ctx)` function is one collector.

Discovered by module name, so adding a collector is adding a file. A module may set
`LIVE_ONLY = True` when it reads the running system (/proc, sockets) rather than files, so it is
skipped for an offline root.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from cloudward.workload.observation import Collector

__all__ = ["CollectorSpec", "all_collectors"]


@dataclass(frozen=True, slots=True)
class CollectorSpec:
    name: str
    collect: Collector
    live_only: bool = False


def all_collectors() -> list[CollectorSpec]:
    specs = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        collect = getattr(module, "collect", None)
        if callable(collect):
            specs.append(CollectorSpec(info.name, collect, bool(getattr(module, "LIVE_ONLY", False))))
    return specs
