"""Options and plumbing shared by every command: output, gating, settings, store, rules."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from collections.abc import Collection

    from rich.console import Console

    from cloudward.core.config import Settings
    from cloudward.core.rules import MatchValidator, Rule, RuleSet
    from cloudward.core.scan import ScanResult
    from cloudward.core.severity import Severity

FORMATS = ("table", "json", "sarif", "html")

FormatOption = typer.Option(None, "--format", "-f", help=f"Output format: {', '.join(FORMATS)} "
                            "(default: table on a terminal, json otherwise).")
OutputOption = typer.Option(None, "--output", "-o", help="Write the report to this file instead of stdout.")
FailOnOption = typer.Option(None, "--fail-on", help="Exit 1 when a finding at or above this severity "
                            "(info, low, medium, high, critical) is found.")
RulesOption = typer.Option(None, "--rules", help="Add the YAML rules in this directory (repeatable).")
ConfigOption = typer.Option(None, "--config", help="Path to cloudward.toml.")
NoStoreOption = typer.Option(False, "--no-store", help="Do not record this scan in the findings store.")


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


@cache
def out_console() -> Console:
    from rich.console import Console

    return Console()


def settings(config: Path | None = None) -> Settings:
    from cloudward.core.config import load_settings

    return load_settings(config)


def parse_severity(text: str | None, option: str) -> Severity | None:
    if text is None:
        return None
    from cloudward.core.errors import UsageError
    from cloudward.core.severity import Severity

    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def resolve_format(fmt: str | None, output: Path | None) -> str:
    from cloudward.core.errors import UsageError

    if fmt is None:
        if output is not None:
            return {".sarif": "sarif", ".html": "html", ".json": "json"}.get(output.suffix, "json")
        return "table" if sys.stdout.isatty() else "json"
    if fmt not in FORMATS:
        raise UsageError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


# built-in rule packages, in load order, and the engines their rules are for (the proxies' rules sit
# in cloudward.network; its Suricata signatures join as engine `suricata`, see load_all_rules)
RULE_PACKAGES: dict[str, tuple[str, ...]] = {
    "cloudward.exposure": ("exposure",), "cloudward.secrets": ("secrets",), "cloudward.workload": ("host",),
    "cloudward.container": ("image",), "cloudward.data": ("content",), "cloudward.conformity.aws": ("aws",),
    "cloudward.conformity.iac": ("iac",), "cloudward.appsec": ("appsec",),
    "cloudward.network": ("redis_proxy", "docker_proxy", "scan"),
}
# engine -> (module, function) that checks a rule's match block, imported when a rule needs it
RULE_VALIDATORS: dict[str, tuple[str, str]] = {
    "exposure": ("cloudward.exposure.evaluate", "validate_rule"),
    "secrets": ("cloudward.secrets.engine", "validate_rule"),
    "host": ("cloudward.workload.evaluate", "validate_rule"),
    "image": ("cloudward.engines.subject_rules", "validate_rule"),
    "content": ("cloudward.engines.subject_rules", "validate_rule"),
    "aws": ("cloudward.conformity.aws", "validate_rule"),
    "iac": ("cloudward.engines.subject_rules", "validate_rule"),
    "appsec": ("cloudward.appsec.engine", "validate_rule"),
    "redis_proxy": ("cloudward.network.redis_policy", "validate_rule"),
    "docker_proxy": ("cloudward.network.docker_findings", "validate_rule"),
    "scan": ("cloudward.network.scans", "validate_rule"),
}


def _validator(module: str, name: str) -> MatchValidator:
    def check(rule: Rule) -> None:
        import importlib

        getattr(importlib.import_module(module), name)(rule)

    return check


def load_all_rules(extra: list[Path] | None = None, engines: Collection[str] | None = None) -> RuleSet:
    """Every capability's built-in rules plus the user's folders, validated by their engines.

    With `engines`, only the built-in packages holding rules for those engines are read: `image scan`
    needs the image, content and secret rules, and parsing and validating every capability's (cloud
    accounts, network signatures, ...) cost it more than a cached re-scan's whole work. The user's
    folders are read whole either way; a user rule reusing the id of a built-in rule that was not
    read is then not reported as a duplicate by that command.
    """
    from cloudward.core.rules import load_rules

    packages = [p for p, made in RULE_PACKAGES.items() if engines is None or set(made) & set(engines)]
    validators = {engine: _validator(*where) for engine, where in RULE_VALIDATORS.items()}
    ruleset = load_rules(packages, extra or [], validators=validators)
    if engines is None or "suricata" in engines:
        from cloudward.network.rulesets import builtin_rules as signature_rules

        for rule in signature_rules():
            ruleset.add(rule)
    return ruleset


def emit(result: ScanResult, fmt: str | None, output: Path | None) -> None:
    from cloudward.report import write_report

    chosen = resolve_format(fmt, output)
    if output is None:
        write_report(result, chosen, sys.stdout)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as handle:
            write_report(result, chosen, handle)
        err_console().print(f"wrote {chosen} report to {output}", highlight=False)


def record(result: ScanResult, config: Path | None, no_store: bool) -> None:
    """Store the scan (findings upserted by fingerprint) unless the user opted out."""
    if no_store:
        return
    from cloudward.store import open_store

    with open_store(settings(config)) as store:
        store.record_scan(result)


EXIT_INTERRUPTED = 130  # Ctrl-C: the partial report was written and the scan stored as cancelled


def finish(result: ScanResult, fmt: str | None, output: Path | None, fail_on: str | None,
           config: Path | None, no_store: bool) -> None:
    """The end of every scan command: report, store, then exit the documented way."""
    from cloudward.core.scan import ScanStatus

    emit(result, fmt, output)
    record(result, config, no_store)
    if result.status is ScanStatus.CANCELLED:
        err_console().print("scan interrupted: the report holds what was found so far", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    gate(result, fail_on)


def gate(result: ScanResult, fail_on: str | None) -> None:
    """Exit codes: 0 clean, 1 findings at/above --fail-on, 3 when the scan itself failed."""
    threshold = parse_severity(fail_on, "--fail-on")
    from cloudward.core.scan import ScanStatus

    if result.status is ScanStatus.FAILED:
        raise typer.Exit(3)
    if threshold is not None and any(f.severity >= threshold for f in result.findings):
        raise typer.Exit(1)
