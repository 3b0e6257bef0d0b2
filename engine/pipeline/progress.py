"""Progress bars on long work (rich), silent when output is not a terminal or --quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


class _RichBar:
    def __init__(self, progress, task):  # type: ignore[no-untyped-def]
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(total: int | None, description: str, disabled: bool = False) -> Iterator:
    if disabled or not sys.stderr.isatty():
        yield _Silent()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        yield _RichBar(progress, progress.add_task(description, total=total))
