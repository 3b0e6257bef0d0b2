"""The small error hierarchy every part of the engine raises.

Users see `str(error)` (no traceback unless `--debug`), so messages name the offending value
and the next command to run.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class StoreBusy(RecipeError):
    """Another process holds the store's lock."""

    def __init__(self, path: str, pid: int | None):
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"store {path} is in use by {who}; wait for it to finish, "
            "or run again with --wait to queue behind it"
        )


class StepFailed(RecipeError):
    """A step raised; the manifest records it and the next run resumes from here."""

    def __init__(self, step: str, key: str, cause: BaseException):
        self.step, self.key, self.cause = step, key, cause
        super().__init__(
            f"step '{step}' ({key[:16]}) failed: {type(cause).__name__}: {cause}\n"
            "finished steps are kept; fix the cause and run the same command again "
            "(add --debug for the traceback)"
        )


class TransientError(Exception):
    """A failure worth retrying: network errors, HTTP 429/5xx, timeouts."""


class ItemFailed(Exception):
    """One item (a video, an LLM call) failed for good; recorded with its reason, never fatal."""
