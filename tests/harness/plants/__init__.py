"""Planted THREAT-MAP artifacts, one module per area; `all_plants()` gathers them for the tests
and for benchmarks/workload (the coverage table of which tool reports which artifact)."""

from __future__ import annotations

import importlib
import pkgutil

from tests.harness.hostroot import Plant


def all_plants() -> list[Plant]:
    plants: list[Plant] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        plants.extend(getattr(module, "PLANTS", ()))
    return plants
