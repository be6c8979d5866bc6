"""`cloudward user add|list|disable|enable|passwd` and `cloudward token create|list|revoke`: the
server's accounts, managed straight in the store (no server needs to run). A token is printed
once, on stdout alone, so `TOKEN=$(cloudward token create alice)` works; only its hash is kept.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloudward.cli.common import ConfigOption, err_console, out_console, settings

if TYPE_CHECKING:
    from cloudward.server.audit import Actor
    from cloudward.server.db import ServerDB

users_app = typer.Typer(help="Users of the API server: add, list, disable, enable, set a password.",
                        no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: create (printed once), list, revoke.", no_args_is_help=True)


@contextmanager
def _db(config: Path | None) -> Iterator[ServerDB]:
    from cloudward.core.config import load_settings  # noqa: F401 - settings() imports it
    from cloudward.server.db import ServerDB
    from cloudward.store.engine import store_url

    db = ServerDB.open(store_url(settings(config)))
    try:
        yield db
    finally:
        db.close()


def _actor() -> Actor:
    from cloudward.cli.server import _os_user
    from cloudward.server.audit import Actor

    return Actor(f"cli:{_os_user()}")


def _read_password(prompt: bool, from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if prompt:
        value: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        return value
    return None


PasswordPrompt = typer.Option(False, "--password", help="Prompt for a dashboard password.")
PasswordStdin = typer.Option(False, "--password-stdin", help="Read the dashboard password from stdin's first line.")


@users_app.command("add")
def add_user(
    name: str,
    role: str = typer.Option("read-only", "--role", help="admin, analyst or read-only."),
    password: bool = PasswordPrompt,
    password_stdin: bool = PasswordStdin,
    config: Path | None = ConfigOption,
) -> None:
    """Add a user. Without a password the user can only use API tokens (`token create`)."""
    from cloudward.server import accounts

    secret = _read_password(password, password_stdin)
    with _db(config) as db:
        info = accounts.create_user(db, _actor(), name, role, secret)
    err_console().print(f"added {info.role.value} {info.name}", highlight=False)


@users_app.command("list")
def list_users(config: Path | None = ConfigOption) -> None:
    from rich.table import Table

    from cloudward.server import accounts

    with _db(config) as db:
        users = accounts.list_users(db)
    table = Table()
    for column in ("name", "role", "state", "password", "created"):
        table.add_column(column)
    for user in users:
        table.add_row(user.name, user.role.value, "disabled" if user.disabled else "enabled",
                      "yes" if user.has_password else "no", user.created.strftime("%Y-%m-%d %H:%M"))
    out_console().print(table)


@users_app.command("disable")
def disable_user(name: str, config: Path | None = ConfigOption) -> None:
    """Disable a user: their tokens stop working and their sessions end (they are kept for the audit log)."""
    from cloudward.server import accounts

    with _db(config) as db:
        accounts.update_user(db, _actor(), name, disabled=True)
    err_console().print(f"disabled {name}", highlight=False)


@users_app.command("enable")
def enable_user(name: str, config: Path | None = ConfigOption) -> None:
    from cloudward.server import accounts

    with _db(config) as db:
        accounts.update_user(db, _actor(), name, disabled=False)
    err_console().print(f"enabled {name}", highlight=False)


@users_app.command("passwd")
def set_password(name: str, password_stdin: bool = PasswordStdin, config: Path | None = ConfigOption) -> None:
    """Set a user's dashboard password (prompted, or from stdin)."""
    from cloudward.server import accounts

    secret = _read_password(not password_stdin, password_stdin)
    with _db(config) as db:
        accounts.update_user(db, _actor(), name, password=secret)
    err_console().print(f"password of {name} set", highlight=False)


@tokens_app.command("create")
def create_token(
    user: str,
    name: str = typer.Option("", "--name", help="What the token is for (shown by `token list`)."),
    expires_days: int | None = typer.Option(None, "--expires-days", min=1, max=3650, help="Expire after N days."),
    config: Path | None = ConfigOption,
) -> None:
    """Create an API token for USER and print it once (stdout); only its SHA-256 is stored."""
    from datetime import timedelta

    from cloudward.server import accounts

    with _db(config) as db:
        expires = db.clock() + timedelta(days=expires_days) if expires_days else None
        info, value = accounts.create_token(db, _actor(), user, name, expires)
    err_console().print(f"token {info.id} for {user} (shown once; `cloudward token revoke {info.id}` to revoke):",
                        highlight=False)
    sys.stdout.write(value + "\n")


@tokens_app.command("list")
def list_tokens(user: str | None = typer.Argument(None), config: Path | None = ConfigOption) -> None:
    """Tokens (never their values): id, user, name, created, expiry, last use, revoked."""
    from rich.table import Table
    from rich.text import Text

    from cloudward.server import accounts

    with _db(config) as db:
        tokens = accounts.list_tokens(db, user)
    table = Table()
    for column in ("id", "user", "name", "created", "expires", "last used", "revoked"):
        table.add_column(column)

    def when(value: object) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else "-"

    for token in tokens:
        table.add_row(token.id, token.user, Text(token.name), when(token.created), when(token.expires),
                      when(token.last_used), when(token.revoked))
    out_console().print(table)


@tokens_app.command("revoke")
def revoke_token(token_id: str, config: Path | None = ConfigOption) -> None:
    from cloudward.server import accounts

    with _db(config) as db:
        accounts.revoke_token(db, _actor(), token_id)
    err_console().print(f"revoked {token_id}", highlight=False)
