"""Logging: rich on the console, plain text into each run's run.log; both scrubbed of secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.redact import redact

LOGGER = "engine"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
CONSOLE_HANDLER = "recipe-console"  # the name that marks our console handler, so it is added once


class RedactSecrets(logging.Filter):
    """Scrubs API keys and credentials (engine.redact) from every record a handler emits.

    On the handlers, not the logger: a logger's filter misses records from its children
    (engine.steps.questions, ...), a handler's sees them all. The message is rendered with its
    arguments first (a key is usually an argument), and a traceback is rendered to text so it
    is scrubbed too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text = redact(record.exc_text or logging.Formatter().formatException(record.exc_info))
            record.exc_info = None  # a handler would otherwise format the raw traceback again
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


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
