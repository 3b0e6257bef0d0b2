"""Every exception class of the engine, and the one rule for which failures are worth retrying.

Users see `str(error)` (no traceback unless `--debug`), so messages name the offending value
and the next command to run. Every message is scrubbed of secrets when the exception is built
(engine.redact): a provider that echoes the API key cannot put it in a log, a table or a manifest
through one of ours. This module is the bottom layer: it imports nothing of the engine but
engine.redact and none of the HTTP libraries (it only looks at those a caller already imported).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.redact import redact


class Redacted(Exception):
    """An exception whose string arguments are scrubbed of secrets as it is built.

    The base of every class below: their messages quote provider replies and library errors,
    and they travel to every sink (logs, manifest, step rows, console).
    """

    def __init__(self, *args: object):
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


# -- what the user can fix (the CLI prints the message and exits 1) -----------------------------


class RecipeError(Redacted):
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


class StopTraining(Exception):
    """Raised by the training callback to end mlx-lm's loop early (train.early_stopping).

    mlx-lm's trainer has no stop hook; the train code catches this at once, so no user sees it.
    """

    def __init__(self, iteration: int):
        super().__init__(f"early stop at iteration {iteration}")
        self.iteration = iteration


class StoreBusy(RecipeError):
    """Another process holds the store's lock."""

    def __init__(self, path: str, pid: int | None):
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"store {path} is in use by {who}; wait for it to finish, or run again with --wait to queue behind it"
        )


class StoreDamaged(RecipeError):
    """The store file cannot be read: truncated, garbled, not a DuckDB file, or not a file at all.

    Raised when opening finds it (nothing is written to it then) and when a damaged block turns
    up mid-run (the run stops; the store is closed without a checkpoint). The message names the
    file and the three ways on: see what is readable, copy it into a new store, or start fresh.
    """

    def __init__(self, path: str, detail: str, during: str = "opening"):
        self.path, self.detail = path, detail
        store = shlex.quote(path)
        salvaged = shlex.quote(str(Path(path).with_name(Path(path).stem + ".salvaged.duckdb")))
        moved = shlex.quote(path + ".damaged")
        super().__init__(
            f"store {path} is damaged ({during} it failed: {detail})\n"
            "it was not written to after the damage was found; cached work in it may still be readable:\n"
            + _aligned(
                [
                    (f"recipe store check --store {store}", "list what is still readable"),
                    (
                        f"recipe store salvage {salvaged} --store {store}",
                        "copy every readable row into a new store",
                    ),
                    (f"mv {store} {moved}", "or move it away and start fresh"),
                ]
            )
        )


class StoreUnreadable(RecipeError):
    """`recipe store check/salvage` found nothing readable: the file does not open at all."""

    def __init__(self, path: str, detail: str):
        moved = shlex.quote(path + ".damaged")
        super().__init__(
            f"store {path} cannot be read at all ({detail}); nothing in it can be saved.\n"
            f"move it away and start fresh (the next run recomputes everything):\n  mv {shlex.quote(path)} {moved}"
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
    return _aligned(commands)


def _aligned(commands: list[tuple[str, str]]) -> str:
    """Commands to paste, one a line, with why after an aligned `#`."""
    width = max(len(command) for command, _ in commands)
    return "\n".join(f"  {command:<{width}}  # {why}" for command, why in commands)


class UnsupportedArchitecture(RecipeError):
    """The model's architecture has no GGUF mapping (export skips GGUF or fails, as configured)."""


class LLMUnavailable(RecipeError):
    """The provider cannot serve this run at all (bad key, unknown model, down for every call).

    Raised instead of recording every item as failed: the step then fails, nothing wrong is
    cached, and the next run retries (answers that did arrive are in the cache already).
    """


class DatasetUnreadable(RecipeError):
    """A `type: dataset` source whose data cannot be used at all: no file, an empty file, a column
    the recipe names that the file lacks, a format DuckDB cannot read, hf:// without the network.
    The message names the file and the recipe field to change."""


class DistributedTrainingFailed(RecipeError):
    """A rank of a distributed training run (`train.distributed`) failed, was killed, or never finished.

    Carries the rank, how it ended and its last log lines; nothing of the run is published (rank
    0's adapters stay in a temporary folder), so the next `recipe run` trains again from scratch.
    """

    def __init__(self, rank: int | None, world_size: int, how: str, last_lines: list[str], log_dir: str):
        self.rank, self.world_size, self.how, self.last_lines = rank, world_size, how, last_lines
        who = f"rank {rank} of {world_size}" if rank is not None else f"a rank of {world_size}"
        tail = "\n".join(f"  | {line}" for line in last_lines) or "  (its log is empty)"
        super().__init__(
            f"distributed training failed: {who} {how}; its last log lines:\n{tail}\n"
            f"every rank's log is in {log_dir}; nothing was published: fix the cause and run again "
            "(training restarts from scratch)"
        )


# -- failures of one item: recorded with their reason, never fatal to a run ---------------------


class ItemFailed(Redacted):
    """One item (a video, an LLM call) failed for good; recorded with its reason, never fatal."""


class CallFailed(ItemFailed):
    """An LLM call that will not succeed by retrying (bad request, retries exhausted)."""


class FetchFailed(ItemFailed):
    """A video's transcript could not be fetched.

    `category` is short (for the summary), `reason` readable, `permanent` says whether to cache
    the failure (never ask again) and `availability` is what the failure revealed, if anything.
    """

    def __init__(self, category: str, reason: str, permanent: bool, availability: str | None = None):
        reason = redact(reason)
        self.category, self.reason, self.permanent, self.availability = category, reason, permanent, availability
        super().__init__(f"{category}: {reason}")


class MalformedTranscript(ItemFailed):
    """A transcript file (local, or subtitles downloaded by yt-dlp) that cannot be parsed."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, redact(reason)
        super().__init__(f"{path}: {reason}")


# -- transient failures -------------------------------------------------------------------------


class TransientError(Redacted):
    """A failure worth retrying that no status code or exception class tells apart by itself.

    Raised (from the original error) by our adapters where a library reports "try again later"
    only in its own words: youtube-transcript-api's RequestBlocked/IpBlocked (YouTube's 429) and
    yt-dlp errors whose text alone says HTTP 429/5xx or a timeout.
    """


# HTTP statuses worth retrying: the ones the OpenAI SDK retries too (request timeout, lock
# conflict, rate limit) and 425 Too Early; every 5xx is added below. 400 (bad request, context
# length, content policy), 401/403 (key, permission), 404 (model), 413, 422 will not change.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})

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

# A request that cannot be sent as configured: an invalid URL, a scheme that is not HTTP(S).
# litellm wraps these as a "500" InternalServerError/APIConnectionError, so they must be found
# anywhere in the chain, before any status is believed.
BAD_ENDPOINT_ERRORS = {
    "httpx": ("InvalidURL", "UnsupportedProtocol"),
    "aiohttp": ("InvalidURL", "NonHttpUrlClientError", "NonHttpUrlRedirectClientError"),  # InvalidUrlClientError too
    "requests.exceptions": ("InvalidURL", "InvalidSchema", "MissingSchema", "InvalidHeader"),
    "urllib3.exceptions": ("LocationValueError",),  # LocationParseError included
}

# Provider answers that say "never": the SDK's classes for 400/401/403/404/422, which litellm's
# BadRequestError, ContextWindowExceededError, ContentPolicyViolationError, UnsupportedParamsError,
# AuthenticationError, PermissionDeniedError and NotFoundError derive from. Checked by class as
# well as by status because litellm raises some of them before any HTTP request (no status).
REFUSAL_ERRORS = {
    "openai": (
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "UnprocessableEntityError",
    ),
}


def is_interrupt(error: BaseException) -> bool:
    """Ctrl-C, also when a library turned it into its own error: DuckDB cancels the query it
    is running on SIGINT and raises `RuntimeError: Query interrupted` in place of
    KeyboardInterrupt, which would otherwise read as a failed step (exit 1, not 130)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        if type(seen).__name__ == "InterruptException":  # duckdb's, for a query cancelled by interrupt()
            return True
        if isinstance(seen, RuntimeError) and "Query interrupted" in str(seen):  # duckdb's, on SIGINT
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_transient(error: BaseException) -> bool:
    """Whether retrying the call that raised `error` may succeed.

    Walks the error and its causes (yt-dlp, youtube-transcript-api and litellm wrap the real one).
    First, anywhere in the chain: our TransientError marker says yes; a request that cannot be
    sent (bad_endpoint), a provider refusal (REFUSAL_ERRORS) or a plain ValueError/TypeError
    raised while building the request says no, whatever status a wrapper gave it. Then the first
    that says something definite: an HTTP status (429, 408, 409, 425, 5xx: yes; any other: no),
    or a timeout or connection failure (builtin, asyncio, or one of NETWORK_ERRORS).
    """
    chain = list(_causes(error))
    for current in chain:
        if isinstance(current, TransientError):
            return True
        if _cannot_succeed(current):
            return False
    for current in chain:
        status = http_status(current)
        if status is not None:
            return status in TRANSIENT_STATUS or status >= 500
        if isinstance(current, (TimeoutError, asyncio.TimeoutError, ConnectionError, *_classes(NETWORK_ERRORS))):
            return True
    return False


def bad_endpoint(error: BaseException) -> bool:
    """The request cannot be sent as configured, so no call will ever succeed: an invalid URL,
    a non-HTTP scheme, or credentials the HTTP library refuses (`user:password@` in api_base
    alongside the API key: "Cannot combine AUTHORIZATION header ... credentials encoded in URL").
    """
    return any(_is_bad_endpoint(current) for current in _causes(error))


def _is_bad_endpoint(error: BaseException) -> bool:
    if isinstance(error, _classes(BAD_ENDPOINT_ERRORS)):
        return True
    # urllib.parse ("Invalid IPv6 URL", "Port out of range 0-65535") and aiohttp (credentials in
    # the URL) raise plain ValueError
    return type(error) is ValueError and any(word in str(error) for word in ("URL", "Port", "port"))


def _cannot_succeed(error: BaseException) -> bool:
    # A plain ValueError/TypeError is a request that could not be built; subclasses are left to
    # the rules below: JSONDecodeError and pydantic's ValidationError mean a garbled reply.
    return (
        _is_bad_endpoint(error) or isinstance(error, _classes(REFUSAL_ERRORS)) or type(error) in (ValueError, TypeError)
    )


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


def _classes(by_module: Mapping[str, tuple[str, ...]]) -> tuple[type, ...]:
    """The classes named in `by_module` whose modules are already imported."""
    found = []
    for module_name, names in by_module.items():
        module = sys.modules.get(module_name)
        found += [cls for cls in (getattr(module, n, None) for n in names) if isinstance(cls, type)]
    return tuple(found)
