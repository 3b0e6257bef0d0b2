"""Every exception class of the engine, and the one rule for which failures are worth retrying.

Users see `str(error)` (no traceback unless `--debug`), so messages name the offending value
and the next command to run. This module is the bottom layer: it imports nothing of the engine
and none of the HTTP libraries (it only looks at those a caller already imported).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# -- what the user can fix (the CLI prints the message and exits 1) -----------------------------


class RecipeError(Exception):
    """Anything the user can fix in their recipe, inputs or command line (exit code 1)."""


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in the recipe file."""

    file: str
    line: int
    col: int
    path: str | None  # dotted path; None for YAML syntax errors, "" for the document root
    message: str

    def __str__(self) -> str:
        if self.path is None:
            return f"{self.file}:{self.line}:{self.col}: {self.message}"
        return f"{self.file}:{self.line}:{self.col}: {self.path or '(root)'}: {self.message}"


class RecipeInvalid(RecipeError):
    """The recipe failed validation; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(str(p) for p in problems)
        count = len(problems)
        super().__init__(f"{lines}\n{count} problem{'s' if count != 1 else ''} found")


class TextProblem(ValueError):
    """A recipe's bytes or YAML text cannot become data; where (1-based line, column) and why.

    Raised inside the reader and turned into a RecipeInvalid with the file name.
    """

    def __init__(self, line: int, col: int, message: str):
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


class TemplateError(ValueError):
    """A prompt template that is not plain `{name}` placeholders and `{{`/`}}` literal braces."""


class StoreBusy(RecipeError):
    """Another process holds the store's lock."""

    def __init__(self, path: str, pid: int | None):
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"store {path} is in use by {who}; wait for it to finish, or run again with --wait to queue behind it"
        )


class StepFailed(RecipeError):
    """A step raised; the manifest records it and the next run resumes from here.

    The message ends with the three commands a user needs next (resume, redo the step, inspect
    the run), spelled with the recipe path they ran, so they can be pasted as they are.
    """

    def __init__(self, step: str, key: str, cause: BaseException, recipe_path: str | Path, run_id: str):
        self.step, self.key, self.cause = step, key, cause
        self.recipe_path, self.run_id = str(recipe_path), run_id
        super().__init__(
            f"step '{step}' ({key[:16]}) failed: {type(cause).__name__}: {cause}\n"
            "finished steps are kept (add --debug for the traceback); fix the cause, then:\n"
            + _next_commands(step, self.recipe_path, run_id)
        )


def _next_commands(step: str, recipe_path: str, run_id: str) -> str:
    recipe = shlex.quote(recipe_path)  # a path with spaces must still paste as one argument
    commands = [
        (f"recipe run {recipe}", "resume: rerun what failed, reuse the rest"),
        (f"recipe run {recipe} --force {step}", f"redo '{step}' and the steps after it"),
        (f"recipe show {run_id}", "inspect the run"),
    ]
    width = max(len(command) for command, _ in commands)
    return "\n".join(f"  {command:<{width}}  # {why}" for command, why in commands)


class UnsupportedArchitecture(RecipeError):
    """The model's architecture has no GGUF mapping (export skips GGUF or fails, as configured)."""


class LLMUnavailable(RecipeError):
    """The provider cannot serve this run at all (bad key, unknown model, down for every call).

    Raised instead of recording every item as failed: the step then fails, nothing wrong is
    cached, and the next run retries (answers that did arrive are in the cache already).
    """


# -- failures of one item: recorded with their reason, never fatal to a run ---------------------


class ItemFailed(Exception):
    """One item (a video, an LLM call) failed for good; recorded with its reason, never fatal."""


class CallFailed(ItemFailed):
    """An LLM call that will not succeed by retrying (bad request, retries exhausted)."""


class FetchFailed(ItemFailed):
    """A video's transcript could not be fetched.

    `category` is short (for the summary), `reason` readable, `permanent` says whether to cache
    the failure (never ask again) and `availability` is what the failure revealed, if anything.
    """

    def __init__(self, category: str, reason: str, permanent: bool, availability: str | None = None):
        self.category, self.reason, self.permanent, self.availability = category, reason, permanent, availability
        super().__init__(f"{category}: {reason}")


class MalformedTranscript(ItemFailed):
    """A transcript file (local, or subtitles downloaded by yt-dlp) that cannot be parsed."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


# -- transient failures -------------------------------------------------------------------------


class TransientError(Exception):
    """A failure worth retrying that no status code or exception class tells apart by itself.

    Raised (from the original error) by our adapters where a library reports "try again later"
    only in its own words: youtube-transcript-api's RequestBlocked/IpBlocked (YouTube's 429) and
    yt-dlp errors whose text alone says HTTP 429/5xx or a timeout.
    """


# HTTP statuses worth retrying: the ones the OpenAI SDK retries too (request timeout, lock
# conflict, rate limit); every 5xx is added below. 401/403/404 and other 4xx will not change.
TRANSIENT_STATUS = frozenset({408, 409, 429})

# Network failures of the HTTP libraries we call through, by module. Only modules already
# imported are consulted: an error cannot be an instance of a class that was never loaded, and
# importing these here would slow every command (and this module must stay import-free).
NETWORK_ERRORS = {
    "httpx": ("TimeoutException", "NetworkError", "RemoteProtocolError"),
    "requests.exceptions": ("Timeout", "ConnectionError", "ChunkedEncodingError"),
    "urllib3.exceptions": ("TimeoutError", "ProtocolError", "NewConnectionError"),
    "aiohttp": ("ClientConnectionError", "ClientPayloadError"),
    "openai": ("APIConnectionError",),  # APITimeoutError included
    "yt_dlp.networking.exceptions": ("TransportError",),  # IncompleteRead, ProxyError included
}


def is_transient(error: BaseException) -> bool:
    """Whether retrying the call that raised `error` may succeed.

    Walks the error and its causes (yt-dlp and youtube-transcript-api wrap the real one) and
    answers from the first that says something definite: our TransientError marker, an HTTP
    status (429, 408, 409, 5xx: yes; any other: no, however it was wrapped), or a timeout or
    connection failure (builtin, asyncio, or one of NETWORK_ERRORS).
    """
    for current in _causes(error):
        if isinstance(current, TransientError):
            return True
        status = http_status(current)
        if status is not None:
            return status in TRANSIENT_STATUS or status >= 500
        if isinstance(current, (TimeoutError, asyncio.TimeoutError, ConnectionError, *_network_errors())):
            return True
    return False


def http_status(error: BaseException) -> int | None:
    """The HTTP status an error carries: litellm/openai `status_code`, yt-dlp/urllib `status`,
    or requests/httpx `response.status_code`; None when it carries none."""
    response = getattr(error, "response", None)
    for value in (
        getattr(error, "status_code", None),
        getattr(error, "status", None),
        getattr(response, "status_code", None),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
            return value
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, then what caused it: `cause` (yt-dlp ExtractorError), `exc_info` (yt-dlp
    DownloadError), `__cause__` / `__context__` (raise ... from / during handling)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        exc_info = getattr(current, "exc_info", None)
        wrapped = getattr(current, "cause", None) or (exc_info[1] if isinstance(exc_info, tuple) else None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__ or current.__context__


def _network_errors() -> tuple[type, ...]:
    found = []
    for module_name, names in NETWORK_ERRORS.items():
        module = sys.modules.get(module_name)
        found += [cls for cls in (getattr(module, n, None) for n in names) if isinstance(cls, type)]
    return tuple(found)
