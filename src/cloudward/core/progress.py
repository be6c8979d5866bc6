"""A rich progress bar on a terminal, silence in pipes and CI logs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Progress(Protocol):
    def advance(self, amount: int = 1) -> None: ...
    def total(self, total: int | None) -> None: ...
    def describe(self, text: str) -> None: ...


class _Silent:
    def advance(self, amount: int = 1) -> None:
        pass

    def total(self, total: int | None) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


class _Rich:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, amount: int = 1) -> None:
        self._bar.advance(self._task, amount)

    def total(self, total: int | None) -> None:
        self._bar.update(self._task, total=total)

    def describe(self, text: str) -> None:
        self._bar.update(self._task, description=text)


@contextmanager
def progress(description: str, total: int | None = None, enabled: bool | None = None) -> Iterator[Progress]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        yield _Rich(bar, bar.add_task(description, total=total))
