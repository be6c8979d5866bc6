"""Every planted THREAT-MAP artifact (tests/harness/plants) is reported by `host audit` on a root
that holds it, and none of its rules fires on the same root without it — the positive and negative
fixture of each compromise-hunt claim, at the level of whole roots. The clean and hardened roots
give no critical finding."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.severity import Severity
from cloudward.workload import HostRoot, run_audit
from tests.harness.hostroot import Plant, build_clean_root, build_hardened_root
from tests.harness.plants import all_plants

PLANTS = all_plants()
BASES = {"clean": build_clean_root, "hardened": build_hardened_root}


@cache
def host_rules():
    return load_all_rules().engine("host")


def audit(root: Path):
    return run_audit(HostRoot(root), host_rules(), processes=False)


def base_of(plant: Plant) -> str:
    return getattr(plant, "base", "clean")


def test_plants_have_unique_names():
    names = [p.name for p in PLANTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("plant", PLANTS, ids=lambda p: p.name)
def test_plant_is_reported_and_its_base_root_is_not(plant: Plant, tmp_path: Path):
    known = {r.id for r in host_rules()}
    assert set(plant.rule_ids) <= known, f"plant names unknown rules: {set(plant.rule_ids) - known}"
    base = BASES[base_of(plant)](tmp_path / "base")
    before = {f.rule_id for f in audit(base).findings}
    assert not before & set(plant.rule_ids), f"fires without the plant: {before & set(plant.rule_ids)}"

    root = BASES[base_of(plant)](tmp_path / "planted")
    plant.apply(root)
    result = audit(root)
    fired = {f.rule_id for f in result.findings}
    assert fired & set(plant.rule_ids), f"{plant.name}: expected one of {plant.rule_ids}, got {sorted(fired)}"
    assert not [e for e in result.errors if e.target.startswith("collector ")]


@pytest.mark.parametrize("base", sorted(BASES))
def test_base_roots_have_no_critical_finding(base: str, tmp_path: Path):
    result = audit(BASES[base](tmp_path / base))
    critical = [(f.rule_id, f.location) for f in result.findings if f.severity is Severity.CRITICAL]
    assert critical == []
    assert not [e for e in result.errors if e.target.startswith("collector ")]


def test_hardened_root_has_no_high_finding(tmp_path: Path):
    result = audit(build_hardened_root(tmp_path / "hardened"))
    assert [(f.rule_id, f.location) for f in result.findings if f.severity >= Severity.HIGH] == []
