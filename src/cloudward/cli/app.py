"""Command groups are registered here; each lives in its own module and imports its capability
lazily inside the command body.

Why a table instead of imports: building every group's click command costs more than most
commands' own work (typer inspects each function's signature and builds its parameters), so `run()`
builds only the group the command line names; `--help`, a typo or anything unrecognised gets the
whole tree, as does `app` (tests and `typer.testing` use it).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

# name on the command line -> (module under cloudward.cli, attribute, a group or a single command),
# in the order `cloudward --help` lists them
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "admission": ("admission", "app", True),
    "appsec": ("appsec", "app", True),
    "conformity": ("conformity", "app", True),
    "db": ("db", "app", True),
    "exposure": ("exposure", "app", True),
    "findings": ("findings", "app", True),
    "host": ("host", "app", True),
    "iac": ("iac", "app", True),
    "image": ("image", "app", True),
    "network": ("network", "app", True),
    "registry": ("registry", "app", True),
    "rules": ("rules", "app", True),
    "storage": ("storage", "app", True),
    "secrets": ("secrets", "app", True),
    "audit": ("audit", "audit", False),
    # the API server and its accounts and schedules
    "server": ("server", "server", False),
    "scheduler": ("server", "scheduler", False),
    "user": ("users", "users_app", True),
    "token": ("users", "tokens_app", True),
    "schedule": ("schedule", "app", True),
    "worker": ("worker", "worker", False),
}


def _version(value: bool) -> None:
    if value:
        import typer

        from cloudward import __version__

        typer.echo(f"cloudward {__version__}")
        raise typer.Exit()


def build_app(only: str | None = None) -> typer.Typer:
    """The root command with every group, or with just `only` (same root options and help texts)."""
    import typer

    app = typer.Typer(
        name="cloudward",
        help="Find and close the cloud gaps that crews such as TeamTNT exploit.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                     help="Print the version and exit."),
    ) -> None:
        """cloudward: exposure scanning, findings store and reports."""

    for name, (module, attribute, group) in COMMANDS.items():
        if only is not None and name != only:
            continue
        target = getattr(importlib.import_module(f"cloudward.cli.{module}"), attribute)
        if group:
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


_full: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    """`app`: the whole command tree, built on first use."""
    global _full
    if name == "app":
        if _full is None:
            _full = build_app()
        return _full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run() -> None:
    from cloudward.core.errors import CloudwardError

    first = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        build_app(first if first in COMMANDS else None)()
    except CloudwardError as exc:
        from cloudward.cli.common import err_console

        err_console().print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise SystemExit(exc.exit_code) from None
