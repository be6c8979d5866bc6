"""`cloudward rules list|show|validate`."""

from __future__ import annotations

from pathlib import Path

import typer

from cloudward.cli.common import RulesOption, err_console, load_all_rules, out_console

app = typer.Typer(help="List, show and validate detection rules.", no_args_is_help=True)


@app.command("list")
def list_rules(
    rules_dir: list[Path] = RulesOption,
    engine: str | None = typer.Option(None, help="Only rules of this engine (e.g. exposure)."),
    tag: str | None = typer.Option(None, help="Only rules carrying this tag (e.g. teamtnt)."),
) -> None:
    """List rules: id, severity, category, title."""
    from rich.table import Table

    ruleset = load_all_rules(rules_dir)
    table = Table(show_lines=False)
    for column in ("id", "severity", "category", "engine", "title"):
        table.add_column(column)
    shown = 0
    for rule in ruleset:
        if engine and rule.engine_name != engine:
            continue
        if tag and tag not in rule.tags:
            continue
        table.add_row(rule.id, rule.severity.value, rule.category.value, rule.engine_name, rule.title)
        shown += 1
    out_console().print(table)
    err_console().print(f"{shown} rules", highlight=False)


@app.command("show")
def show(rule_id: str, rules_dir: list[Path] = RulesOption) -> None:
    """Show one rule in full: metadata, remediation and its detection logic."""
    import yaml

    rule = load_all_rules(rules_dir).get(rule_id)
    data = rule.model_dump(mode="json")
    typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), nl=False)


@app.command("validate")
def validate(rules_dir: list[Path] = RulesOption) -> None:
    """Load every rule (built-in and --rules) and check ATT&CK ids; exit 2 on any problem."""
    from cloudward.core.attack import unknown_techniques
    from cloudward.core.errors import RuleError

    ruleset = load_all_rules(rules_dir)
    problems = [
        f"{rule.source}: {rule.id}: unknown ATT&CK technique {', '.join(bad)}"
        for rule in ruleset
        if (bad := unknown_techniques(rule.attack))
    ]
    if problems:
        raise RuleError("\n".join(problems))
    err_console().print(f"{len(ruleset)} rules valid", highlight=False)
