"""`cloudward db …`: the local vulnerability advisory database (OSV) used by image and host scans.

Thin: parse options, call `cloudward.engines.osv`, print counts. Exit codes: 0 done, 2 usage error,
3 the update failed (the previous database is kept).
"""

from __future__ import annotations

from pathlib import Path

import typer

from cloudward.cli.common import ConfigOption, err_console, out_console, settings

app = typer.Typer(help="Vulnerability advisory database (OSV): update and status.", no_args_is_help=True)

SourceOption = typer.Option(None, "--source", metavar="DIR|URL",
                            help="Load OSV records from this directory (JSON/YAML files or <ECOSYSTEM>/all.zip) or "
                                 "base URL serving <URL>/<ECOSYSTEM>/all.zip (repeatable; default: osv.dev's export).")
EcosystemOption = typer.Option(None, "--ecosystem", metavar="E",
                               help="Ecosystem to fetch (repeatable; default: Debian, Ubuntu, Alpine, PyPI, npm, Go, "
                                    "Maven).")
DbOption = typer.Option(None, "--db", help="Advisory database file (default: <data dir>/advisories.db).")


def _db_path(db: Path | None, config: Path | None) -> Path:
    return db if db is not None else settings(config).resolved_data_dir() / "advisories.db"


@app.command("update")
def update_cmd(source: list[str] | None = SourceOption, ecosystem: list[str] | None = EcosystemOption,
               db: Path | None = DbOption, config: Path | None = ConfigOption) -> None:
    """Rebuild the advisory database; a failed update keeps the previous one."""
    from cloudward.core.errors import UsageError
    from cloudward.engines.osv.db import UpdateError, update

    for item in source or []:
        if not item.startswith(("http://", "https://")) and not Path(item).is_dir():
            raise UsageError(f"--source: {item} is neither a directory nor an http(s) URL")
    path = _db_path(db, config)
    try:
        stats = update(list(source or []), list(ecosystem or []) or None, path)
    except UpdateError as exc:
        err_console().print(f"[red]update failed[/red]: {exc} (kept the previous database)")
        raise typer.Exit(3) from None
    out = out_console()
    out.print(f"{path}: {stats.records} advisories, {stats.affected} affected entries, "
              f"{stats.withdrawn} withdrawn, {stats.duplicates} duplicates, {len(stats.malformed)} malformed",
              soft_wrap=True)
    for eco, count in sorted(stats.per_ecosystem.items()):
        out.print(f"  {eco}: {count}")
    for problem in stats.malformed[:20]:
        err_console().print(f"malformed: {problem}", soft_wrap=True, markup=False)


@app.command("status")
def status_cmd(db: Path | None = DbOption, config: Path | None = ConfigOption) -> None:
    """Show advisory counts per ecosystem and when the database was last updated."""
    from cloudward.engines.osv.db import status

    path = _db_path(db, config)
    try:
        info = status(path)
    except FileNotFoundError as exc:
        err_console().print(str(exc))
        raise typer.Exit(3) from None
    out = out_console()
    out.print(f"{info.path}: {info.advisories} advisories ({info.withdrawn} withdrawn), updated {info.updated}",
              soft_wrap=True)
    for eco, count in info.per_ecosystem.items():
        out.print(f"  {eco}: {count}")
