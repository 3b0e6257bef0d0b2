"""The step contract.

A step is one module in `engine/steps/` with:

    NAME: str                      # table prefix and CLI name
    VERSION: int                   # bump when the step's logic changes its output
    DEPENDS: tuple[str, ...]       # upstream steps whose tables it reads
    COLUMNS: dict[str, str]        # DuckDB types of its output table
    def config(recipe) -> Any      # the slice of the recipe that keys it (hash input)
    def fingerprint(recipe, ctx) -> Any   # optional: digest of outside inputs (files, listings)
    def run(ctx, inputs, cfg) -> Iterable[dict]

`run` returns the rows of its table. Rows that failed or were skipped keep `status`
('ok' | 'failed' | 'skipped') and `reason` so nothing is silently dropped; downstream steps
read `inputs[x].ok_rows()`. Steps that make files write them under `ctx.work_dir`; the engine
moves that folder to its content-addressed home only when the step succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from engine.recipe.config import Recipe
from engine.pipeline.store import ItemCache, Store, Table

STATUS_COLUMNS = {"status": "VARCHAR", "reason": "VARCHAR"}


@dataclass(frozen=True)
class RunOptions:
    retry_failed: bool = False
    debug: bool = False
    quiet: bool = False


@dataclass
class StepContext:
    """What a running step may use: never another step's internals."""

    recipe: Recipe
    step: str
    key: str
    store: Store
    work_dir: Path
    run_dir: Path
    models_dir: Path
    options: RunOptions = field(default_factory=RunOptions)
    fingerprint: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("recipe"))
    upstream_dirs: dict[str, Path] = field(default_factory=dict)

    def upstream_dir(self, step: str) -> Path:
        """The files an upstream step wrote under its work_dir (e.g. split's data/*.jsonl)."""
        if step not in self.upstream_dirs:
            raise KeyError(f"{self.step} does not depend on {step}; add it to DEPENDS")
        return self.upstream_dirs[step]

    def item_cache(self, name: str) -> ItemCache:
        """A persistent per-item cache shared by all runs using this store."""
        return self.store.item_cache(name)

    @contextmanager
    def progress(self, total: int | None, description: str) -> Iterator[Progress]:
        from engine.pipeline.progress import progress_bar  # rich is imported only when work starts

        with progress_bar(total, f"{self.step}: {description}", disabled=self.options.quiet) as bar:
            yield bar


class Progress(Protocol):
    def advance(self, n: int = 1) -> None: ...


class StepModule(Protocol):
    NAME: str
    VERSION: int
    DEPENDS: tuple[str, ...]
    COLUMNS: dict[str, str]

    def config(self, recipe: Recipe) -> Any: ...
    def run(self, ctx: StepContext, inputs: dict[str, Table], cfg: Any) -> Any: ...


def describe(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else module.NAME
