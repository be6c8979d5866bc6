"""`cloudward schedule add|list|remove`: cron-timed scan jobs, stored in the store and run by
`cloudward server` (or `cloudward scheduler`). Times are UTC."""

from __future__ import annotations

from pathlib import Path

import typer

from cloudward.cli.common import ConfigOption, err_console, out_console

app = typer.Typer(help="Scheduled scans: add, list, remove (run by `cloudward server`).", no_args_is_help=True)


@app.command("add")
def add(
    command: str = typer.Argument(..., help="A scan command line, e.g. 'exposure scan 10.0.0.0/16 -p teamtnt'."),
    cron: str = typer.Option(..., "--cron", help="Five-field cron expression in UTC, e.g. '0 * * * *'."),
    config: Path | None = ConfigOption,
) -> None:
    """Add a schedule; prints its id and next run."""
    from cloudward.cli.users import _actor, _db
    from cloudward.server.schedules import add_schedule

    with _db(config) as db:
        info = add_schedule(db, _actor(), command, cron)
    out_console().print(f"schedule {info.id}: {info.command!r} at '{info.cron}', next run "
                        f"{info.next_run:%Y-%m-%d %H:%M} UTC", highlight=False, markup=False)


@app.command("list")
def list_(config: Path | None = ConfigOption) -> None:
    """One line per schedule: id, cron, enabled, next run (UTC), last job, command."""
    from cloudward.cli.users import _db
    from cloudward.server.schedules import list_schedules

    with _db(config) as db:
        schedules = list_schedules(db)
    for item in schedules:
        out_console().print(f"{item.id:>4}  {item.cron:<16} {'on ' if item.enabled else 'off'}  "
                            f"next {item.next_run:%Y-%m-%d %H:%M}  last job {item.last_job_id or '-':<32}  "
                            f"{item.command}", markup=False, highlight=False, soft_wrap=True)
    err_console().print(f"{len(schedules)} schedule(s)", highlight=False)


@app.command("remove")
def remove(schedule_id: int, config: Path | None = ConfigOption) -> None:
    from cloudward.cli.users import _actor, _db
    from cloudward.server.schedules import remove_schedule

    with _db(config) as db:
        remove_schedule(db, _actor(), schedule_id)
    err_console().print(f"removed schedule {schedule_id}", highlight=False)
