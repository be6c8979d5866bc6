"""Placeholder while the command group is being written."""

import typer

app = typer.Typer()


def audit() -> None:
    raise NotImplementedError
