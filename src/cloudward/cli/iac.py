"""`cloudward iac scan`: Terraform (HCL and plan JSON, with variables files, `--var-file` and `--var`),
Kubernetes manifests (and Kustomize renders), kubelet/control-plane configuration, docker-compose
files and Dockerfiles, judged before they are applied.

Thin: validate options, build the rule set, hand the Dockerfile judge of `image lint` (the
container capability's BuildKit parser and its rules) to the IaC scan - the two capabilities stay
independent, this layer composes them - then report, store and gate through `cli/common.py`.
Exit codes: 0 clean, 1 a finding at or above --fail-on, 2 usage error, 3 the scan itself failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloudward.cli.common import (
    ConfigOption,
    FailOnOption,
    FormatOption,
    NoStoreOption,
    OutputOption,
    RulesOption,
    err_console,
    finish,
    load_all_rules,
    parse_severity,
    resolve_format,
)

if TYPE_CHECKING:
    from cloudward.conformity.iac import ExtraJudge
    from cloudward.core.rules import RuleSet

app = typer.Typer(help="Scan infrastructure as code: Terraform, Kubernetes, compose, Dockerfiles.",
                  no_args_is_help=True)

PathsArgument = typer.Argument(None, show_default=False, help="Files or directories to scan (default: .).")
SkipRuleOption = typer.Option(None, "--skip-rule", metavar="ID", help="Do not run this rule (repeatable).")
NoDockerfilesOption = typer.Option(False, "--no-dockerfiles", help="Do not judge Dockerfiles (`image lint` rules).")
VarFileOption = typer.Option(None, "--var-file", metavar="FILE",
                             help="Terraform variables file (.tfvars or .tfvars.json) for every root module, "
                                  "over terraform.tfvars and *.auto.tfvars (repeatable, later wins).")
VarOption = typer.Option(None, "--var", metavar="NAME=VALUE",
                         help="Terraform variable for every root module, over every variables file (repeatable).")
_VARIABLE_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"


def parse_variables(given: list[str]) -> list[tuple[str, str]]:
    """`--var NAME=VALUE` pairs, in order; a malformed one is a usage error naming it."""
    import re

    from cloudward.core.errors import UsageError

    pairs = []
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(_VARIABLE_NAME, name.strip()):
            raise UsageError(f"--var {item[:80]!r}: expected NAME=VALUE with a Terraform variable name")
        pairs.append((name.strip(), value))
    return pairs


def dockerfile_judge(rules: RuleSet) -> ExtraJudge:
    """`image lint`'s parser and rules as a judge the IaC scan can call for Dockerfiles."""
    from cloudward.conformity.iac import ExtraJudge
    from cloudward.container.dockerfile import is_dockerfile, observations

    return ExtraJudge(name="dockerfile", claims=is_dockerfile, observe=observations,
                      rules=[r for r in rules.engine("image") if r.match.get("subject", "").startswith("dockerfile_")],
                      engine="image")


@app.command("scan")
def scan(
    paths: list[str] = PathsArgument,
    skip_rule: list[str] = SkipRuleOption,
    no_dockerfiles: bool = NoDockerfilesOption,
    var_file: list[str] = VarFileOption,
    var: list[str] = VarOption,
    rules_dir: list[Path] = RulesOption,
    format: str | None = FormatOption,  # shadows the builtin: the option is called --format
    output: Path | None = OutputOption,
    fail_on: str | None = FailOnOption,
    no_store: bool = NoStoreOption,
    config: Path | None = ConfigOption,
) -> None:
    """Scan IaC files; every finding names its file (relative to the scanned root) and line."""
    from cloudward.conformity.iac import ENGINE, scan_paths
    from cloudward.core.errors import UsageError

    resolve_format(format, output)
    parse_severity(fail_on, "--fail-on")
    variables = parse_variables(list(var or []))
    missing = [f for f in var_file or [] if not Path(f).is_file()]
    if missing:
        raise UsageError(f"--var-file: no such file: {', '.join(missing)}")
    rules = load_all_rules(list(rules_dir or []))
    judges = [] if no_dockerfiles else [dockerfile_judge(rules)]
    known = {r.id for r in rules.engine(ENGINE)} | {r.id for j in judges for r in j.rules}
    unknown = sorted(set(skip_rule or ()) - known)
    if unknown:
        raise UsageError(f"--skip-rule: no IaC or Dockerfile rule named {', '.join(unknown)}")
    result = scan_paths(list(paths or []) or ["."], rules.engine(ENGINE), judges=judges,
                        skip_rules=skip_rule or (), var_files=list(var_file or []), variables=variables)
    stats = result.stats
    err_console().print(
        f"iac scan: {stats.get('files', 0):,} files ({stats.get('terraform', 0):,} Terraform, "
        f"{stats.get('terraform_plan', 0):,} plans, {stats.get('kubernetes', 0):,} Kubernetes, "
        f"{stats.get('compose', 0):,} compose, {stats.get('dockerfile', 0):,} Dockerfiles, "
        f"{stats.get('kustomizations', 0):,} kustomizations), "
        f"{len(result.findings):,} finding{'s' if len(result.findings) != 1 else ''}, "
        f"{stats.get('suppressed', 0):,} suppressed, "
        f"{len(result.errors):,} error{'s' if len(result.errors) != 1 else ''}", highlight=False)
    finish(result, format, output, fail_on, config, no_store)
