"""Command groups are registered here; each lives in its own module and imports its capability
lazily inside the command body."""

from __future__ import annotations

import typer

from cloudward.cli import (
    admission,
    appsec,
    audit,
    conformity,
    db,
    exposure,
    findings,
    host,
    iac,
    image,
    network,
    registry,
    rules,
    schedule,
    secrets,
    server,
    storage,
    users,
    worker,
)

app = typer.Typer(
    name="cloudward",
    help="Find and close the cloud gaps that crews such as TeamTNT exploit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from cloudward import __version__

        typer.echo(f"cloudward {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """cloudward: exposure scanning, findings store and reports."""


app.add_typer(admission.app, name="admission")
app.add_typer(appsec.app, name="appsec")
app.add_typer(conformity.app, name="conformity")
app.add_typer(db.app, name="db")
app.add_typer(exposure.app, name="exposure")
app.add_typer(findings.app, name="findings")
app.add_typer(host.app, name="host")
app.add_typer(iac.app, name="iac")
app.add_typer(image.app, name="image")
app.add_typer(network.app, name="network")
app.add_typer(registry.app, name="registry")
app.add_typer(rules.app, name="rules")
app.add_typer(storage.app, name="storage")
app.add_typer(secrets.app, name="secrets")
app.command("audit")(audit.audit)
# the API server and its accounts and schedules
app.command("server")(server.server)
app.command("scheduler")(server.scheduler)
app.add_typer(users.users_app, name="user")
app.add_typer(users.tokens_app, name="token")
app.add_typer(schedule.app, name="schedule")
app.command("worker")(worker.worker)


def run() -> None:
    from cloudward.core.errors import CloudwardError

    try:
        app()
    except CloudwardError as exc:
        from cloudward.cli.common import err_console

        err_console().print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise SystemExit(exc.exit_code) from None
