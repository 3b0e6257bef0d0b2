"""Logging: rich on a terminal, plain lines on any other console and in each run's run.log; all scrubbed of secrets."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from engine.pipeline.progress import SHOWN_ON_BAR, stderr_console
from engine.redact import RedactSecrets

LOGGER = "engine"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
CONSOLE_HANDLER = "recipe-console"  # the name that marks our console handler, so it is added once


def setup_console(debug: bool = False, quiet: bool = False) -> None:
    """Console handler for the `engine` logger (idempotent)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.DEBUG)
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    for handler in logger.handlers:
        if handler.get_name() == CONSOLE_HANDLER:
            handler.setLevel(level)
            return
    handler = ConsoleHandler(rich_tracebacks=debug)
    handler.setLevel(level)
    handler.set_name(CONSOLE_HANDLER)
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    logger.propagate = False


class ConsoleHandler(logging.Handler):
    """rich on a terminal; plain `LEVEL    message` lines, unwrapped, off one (a pipe, a CI log),
    where rich would wrap every line at 80 columns. Decided per record on the stderr of the
    moment, so a test runner's captured stream is honoured as well as a real one.

    On a terminal a progress line that a live bar already shows is skipped (engine.pipeline.progress).
    """

    def __init__(self, rich_tracebacks: bool = False) -> None:
        super().__init__()
        self._rich_tracebacks = rich_tracebacks
        self._rich: logging.Handler | None = None
        self._plain = logging.Formatter("%(levelname)-8s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        if not _is_terminal(stream):
            try:
                stream.write(self._plain.format(record) + "\n")
                stream.flush()
            except Exception:  # noqa: BLE001 - logging's own rule: a broken stream never kills the caller
                self.handleError(record)
            return
        if getattr(record, SHOWN_ON_BAR, False):
            return
        self._rich_handler().handle(record)

    def _rich_handler(self) -> logging.Handler:
        if self._rich is None:
            from rich.logging import RichHandler

            self._rich = RichHandler(
                console=stderr_console(),
                show_path=False,
                show_time=False,
                rich_tracebacks=self._rich_tracebacks,
                markup=False,
            )
        return self._rich


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append everything the engine logs (DEBUG and up) to `path` while the block runs."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.DEBUG)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG)
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
