"""`cloudward appsec`: test an application's protection by replaying an attack corpus at it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cloudward.cli.common import err_console, out_console

app = typer.Typer(help="Application security: in-app protection (ASGI, WSGI, Lambda) and its tests.",
                  no_args_is_help=True)

DEFAULT_CORPUS = Path("../shared/corpora/crs/tests")


TargetOption = typer.Option(..., "--target", help="The application to test, http://HOST:PORT (only it is contacted).")
CorpusOption = typer.Option(DEFAULT_CORPUS, "--corpus", help="A go-ftw YAML corpus (the OWASP CRS regression tests).")
CrsRulesOption = typer.Option(None, "--crs-rules", help="CRS rules directory: split attack stages by the paranoia "
                              "level of the rules they expect (PL1 column).")
SampleOption = typer.Option(1, "--sample", min=1, help="Replay every Nth stage of each class (1 = all).")
ConcurrencyOption = typer.Option(8, "--concurrency", min=1, max=64, help="Requests in flight.")
BlockedOption = typer.Option([403], "--blocked-status", help="Statuses that mean blocked (repeatable).")
TestFormatOption = typer.Option("table", "--format", "-f", help="table or json.")
TestOutputOption = typer.Option(None, "--output", "-o", help="Also write the JSON report to this file.")


@app.command("test")
def test(
    target: str = TargetOption,
    corpus: Path = CorpusOption,
    crs_rules: Path | None = CrsRulesOption,
    sample: int = SampleOption,
    concurrency: int = ConcurrencyOption,
    blocked_status: list[int] = BlockedOption,
    fmt: str = TestFormatOption,
    output: Path | None = TestOutputOption,
) -> None:
    """Replay every stage of the corpus at --target and report, per attack class, the share of attack
    stages blocked and of benign stages wrongly blocked."""
    from cloudward.appsec.corpus import iter_sample, load_corpus, paranoia_levels, replay, score
    from cloudward.core.errors import UsageError

    if fmt not in ("table", "json"):
        raise UsageError("--format: choose table or json")
    stages = list(iter_sample(load_corpus(corpus), sample))
    if not stages:
        raise UsageError(f"--corpus: no go-ftw test stages under {corpus}")
    levels = paranoia_levels(crs_rules) if crs_rules is not None else None
    err_console().print(f"replaying {len(stages):,} stages at {target}", highlight=False)
    outcomes = replay(stages, target, concurrency=concurrency)
    report = score(outcomes, target, blocked_statuses=blocked_status, levels=levels)
    if fmt == "json":
        text = json.dumps(report.as_dict(), indent=2)
        if output is not None:
            output.write_text(text + "\n")
        else:
            typer.echo(text)
        return
    from rich.table import Table

    table = Table(title=f"{report.stages:,} stages replayed at {target}")
    for column in ("class", "attacks", "blocked", "detection", "PL1 detection", "benign", "wrongly blocked",
                   "false positives", "errors"):
        table.add_column(column, justify="left" if column == "class" else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    for entry in report.classes:
        row = entry.as_dict()
        table.add_row(entry.attack_class, str(entry.attacks), str(entry.blocked), pct(row["detection_rate"]),
                      pct(row["pl1_detection_rate"]) if levels is not None else "-", str(entry.benign),
                      str(entry.wrongly_blocked), pct(row["false_positive_rate"]), str(entry.errors))
    if output is not None:
        output.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        err_console().print(f"wrote json report to {output}", highlight=False)
    out_console().print(table)
