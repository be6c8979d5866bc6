"""Helpers for the IaC tests: write a tree of files, scan it with the shipped rules."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult


@cache
def iac_rules() -> tuple[Rule, ...]:
    from cloudward.cli.common import load_all_rules

    return tuple(load_all_rules().engine("iac"))


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def scan(root: Path | str, **kwargs: object) -> ScanResult:
    from cloudward.conformity.iac import scan_paths

    return scan_paths([str(root)], iac_rules(), **kwargs)  # type: ignore[arg-type]


def hits(result: ScanResult) -> set[tuple[str, str, int]]:
    """(rule id, path, line) of every finding."""
    return {(f.rule_id, str(f.location["path"]), int(f.location["line"])) for f in result.findings}


def rule_ids(result: ScanResult) -> set[str]:
    return {f.rule_id for f in result.findings}


def suppressed(result: ScanResult) -> list[dict[str, object]]:
    """The findings skip comments silenced (kept in the scan's stats)."""
    return list(result.stats.get("suppressed_findings", []))
