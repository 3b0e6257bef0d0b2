"""Logging: rich on the console, plain text into each run's run.log; both scrubbed of secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(
        console=Console(stderr=True), show_path=False, show_time=False, rich_tracebacks=debug, markup=False
    )
    handler.setLevel(level)
    handler.set_name(CONSOLE_HANDLER)
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    logger.propagate = False


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
