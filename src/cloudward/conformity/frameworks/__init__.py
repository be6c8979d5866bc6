"""Compliance frameworks as data: `<name>.yaml` maps control ids to titles and the rule ids that
check them (controls we cannot check are listed with `scored: false` and the reason), so a framework
changes without touching a rule. `evaluate_framework` turns one scan into a status per control."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from cloudward.core.errors import UsageError
from cloudward.core.rules import Rule

STATUSES = ("fail", "error", "pass", "not checked", "not scored")


def available() -> list[str]:
    folder = resources.files(__name__)
    return sorted(e.name[:-5] for e in folder.iterdir() if e.name.endswith(".yaml"))


def load_framework(name: str) -> dict[str, Any]:
    if name not in available():
        raise UsageError(f"--framework: unknown framework {name!r} (choose from {', '.join(available())})")
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("controls"), list):
        raise UsageError(f"framework {name}: malformed file")
    return data


def rule_service(rule_id: str) -> str:
    """`aws.<service>.<check>` -> service."""
    parts = rule_id.split(".")
    return parts[1] if len(parts) > 2 else ""


def evaluate_framework(framework: Mapping[str, Any], scan: Mapping[str, Any],
                       rules: Mapping[str, Rule]) -> dict[str, Any]:
    """Status per control for one scan: `scan` has `stats` (services, failed_units), `errors` and the
    `rule_ids` that fired. A control fails when any of its rules fired; is `error` when a service it
    needs could not be read; `not checked` when that service was not scanned; otherwise passes."""
    stats = scan.get("stats") or {}
    scanned = set(stats.get("services") or [])
    failed = {str(u).split("/", 1)[0] for u in stats.get("failed_units") or []}
    fired = set(scan.get("rule_ids") or [])
    controls = []
    for control in framework["controls"]:
        ids = [str(r) for r in control.get("rules") or []]
        entry: dict[str, Any] = {"id": str(control["id"]), "title": str(control.get("title", "")), "rules": ids}
        if control.get("scored") is False or not ids:
            entry["status"] = "not scored"
            entry["reason"] = str(control.get("reason", "no automated check"))
        else:
            unknown = [r for r in ids if r not in rules]
            services = {rule_service(r) for r in ids}
            failing = sorted(r for r in ids if r in fired)
            entry["failing_rules"] = failing
            if failing:
                entry["status"] = "fail"
            elif unknown:
                entry["status"] = "error"
                entry["reason"] = f"rules not loaded: {', '.join(unknown)}"
            elif services & failed:
                entry["status"] = "error"
                entry["reason"] = f"could not read: {', '.join(sorted(services & failed))}"
            elif not services <= scanned:
                entry["status"] = "not checked"
                entry["reason"] = f"not scanned: {', '.join(sorted(services - scanned))}"
            else:
                entry["status"] = "pass"
        controls.append(entry)
    summary = {s: sum(1 for c in controls if c["status"] == s) for s in STATUSES}
    return {"framework": {"id": framework.get("id"), "title": framework.get("title"),
                          "version": framework.get("version")},
            "scan": {"id": str(scan.get("id", "")), "source": scan.get("source"), "started": scan.get("started"),
                     "account": stats.get("account"), "regions": stats.get("regions")},
            "summary": summary, "controls": controls}
