"""Progress on long work: a rich bar on a terminal, plain periodic lines everywhere else.

Off a terminal (`recipe run ... 2>&1 | tee log`, CI) a bar would print nothing useful, so a
ticker thread logs the innermost piece of work in progress as one plain line every few seconds
(`answers: answering 40/120 (33%), 1m12s elapsed, ~2m24s left`) and a last line when work that
was reported ends. The runner opens a piece of work around each step, so a phase without a bar
of its own (loading a model, converting a GGUF) still says `train: running, 2m30s elapsed`.

The lines go to the `engine.progress` logger: --quiet silences them on the console like every
INFO line, run.log keeps them, and on a terminal the console skips the lines a bar already shows.
RECIPE_PROGRESS_EVERY sets the seconds between lines (default 15).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import rich.console
    import rich.progress

DEFAULT_EVERY = 15.0  # seconds between lines: often enough to see life, rare enough for a log
EVERY_VARIABLE = "RECIPE_PROGRESS_EVERY"
SHOWN_ON_BAR = "shown_on_bar"  # a record attribute: the console skips lines a live bar shows

log = logging.getLogger("engine.progress")


class Progress(Protocol):
    """What long work may do with a bar: say it moved on."""

    def advance(self, n: int = 1) -> None: ...


class Work:
    """One piece of work in progress: what it is, how far along, since when."""

    def __init__(self, total: int | None, description: str, on_bar: bool = False) -> None:
        self.total, self.description, self.on_bar = total, description, on_bar
        self.done = 0
        self.started = time.monotonic()
        self.reported = False  # a periodic line was printed: its end gets one too

    def advance(self, n: int = 1) -> None:
        self.done += n

    def line(self, finished: bool = False) -> str:
        elapsed = time.monotonic() - self.started
        if finished:
            count = f" {self.done}/{self.total}" if self.total else ""
            return f"{self.description}{count} done in {duration(elapsed)}"
        if not self.total:
            return f"{self.description}, {duration(elapsed)} elapsed"
        share = 100 * self.done // self.total
        text = f"{self.description} {self.done}/{self.total} ({share}%), {duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", ~{duration(elapsed * (self.total - self.done) / self.done)} left"
        return text


def duration(seconds: float) -> str:
    """12s, 1m05s, 2h03m: short enough for a progress line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def report_every() -> float:
    """Seconds between progress lines, from RECIPE_PROGRESS_EVERY (a bad value: the default)."""
    try:
        value = float(os.environ.get(EVERY_VARIABLE, DEFAULT_EVERY))
    except ValueError:
        return DEFAULT_EVERY
    return value if value > 0 else DEFAULT_EVERY


class _Ticker:
    """The open pieces of work (innermost last) and the one thread that reports the innermost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Work] = []
        self._stop: threading.Event | None = None

    def push(self, work: Work) -> None:
        with self._lock:
            self._open.append(work)
            if self._stop is None:
                self._stop = threading.Event()
                every = report_every()
                threading.Thread(target=self._run, args=(self._stop, every), name="progress", daemon=True).start()

    def pop(self, work: Work) -> None:
        with self._lock:
            if work in self._open:
                self._open.remove(work)
            if not self._open and self._stop is not None:
                self._stop.set()
                self._stop = None

    def _run(self, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            with self._lock:
                work = self._open[-1] if self._open else None
            if work is not None:
                work.reported = True
                log.info("%s", work.line(), extra={SHOWN_ON_BAR: work.on_bar})


_TICKER = _Ticker()


@contextmanager
def working(description: str, total: int | None = None, on_bar: bool = False, last_line: bool = True) -> Iterator[Work]:
    """Report `description` every few seconds while the block runs (unless something inside
    reports itself), and, with `last_line`, once more at its end if it was reported at all."""
    work = Work(total, description, on_bar)
    _TICKER.push(work)
    try:
        yield work
    finally:
        _TICKER.pop(work)
    if work.reported and last_line:  # not after an error: the error is what the user reads next
        log.info("%s", work.line(finished=True), extra={SHOWN_ON_BAR: on_bar})


_console: rich.console.Console | None = None


def stderr_console() -> rich.console.Console:
    """The one rich console of the process, on stderr: bars and log lines share it, so a line
    logged while a bar is live prints above the bar, and stdout keeps only the command's result."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


class _RichBar:
    def __init__(self, progress: rich.progress.Progress, task: rich.progress.TaskID, work: Work) -> None:
        self._progress, self._task, self._work = progress, task, work

    def advance(self, n: int = 1) -> None:
        self._work.advance(n)
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(total: int | None, description: str, disabled: bool = False) -> Iterator[Work | _RichBar]:
    """A bar on a terminal (not with `disabled`, i.e. --quiet); periodic lines off one."""
    if disabled or not sys.stderr.isatty():
        with working(description, total) as work:
            yield work
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = RichProgress(*columns, transient=True, console=stderr_console())
    with working(description, total, on_bar=True) as work, bar as progress:
        yield _RichBar(progress, progress.add_task(description, total=total), work)
