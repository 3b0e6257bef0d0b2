"""The step contract.

A step is one module in `engine/steps/` with:

    NAME: str                      # table prefix and CLI name (the module's name)
    VERSION: int                   # bump when the step's logic or keyed config changes its output
    DEPENDS: tuple[str, ...]       # upstream steps whose tables it reads (all earlier in the registry)
    COLUMNS: dict[str, str]        # DuckDB types of its output table (with `status` and `reason`)
    SECTION: str | None            # the recipe key it owns, e.g. "filters" (None: none)
    Settings: type[Section]        # that section's class: the schema fragment, defaults, bounds
    LLM_PASSES: tuple[str, ...]    # optional: names under `llm.passes` it reads
    RETRY_FAILED_ROWS: bool        # optional: under --retry-failed a cached table with failed rows
                                   #   is recomputed (cheap: finished items come from item caches)
    def config(recipe) -> Config   # everything run() uses, typed and frozen; all of it keys the step
    def fingerprint(ctx, cfg)      # optional: digest of outside inputs (files, listings)
    def check(recipe, located)     # optional: rules the schema cannot express -> [Problem]
    def run(ctx, inputs, cfg: Config) -> Iterable[dict]

`run` returns the rows of its table. Rows that failed or were skipped keep `status`
('ok' | 'failed' | 'skipped') and `reason` so nothing is silently dropped; downstream steps
read `inputs[x].ok_rows()`. Steps that make files write them under `ctx.work_dir`; the engine
moves that folder to its content-addressed home only when the step succeeds. A step never sees
the recipe while it runs: what it needs is in its config, so what it needs is in its key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from engine.pipeline.progress import Progress
from engine.pipeline.store import ItemCache, Store, Table
from engine.recipe.shared import RecipeBase

STATUS_COLUMNS = {"status": "VARCHAR", "reason": "VARCHAR"}
# What every step's status/reason columns hold; a step's COLUMN_DOCS (next to its COLUMNS, one
# description per column) may say more. Both become COMMENT ON COLUMN in a run's data.duckdb.
STATUS_DOCS = {
    "status": "ok | failed | skipped | dropped: only ok rows go on to the next step.",
    "reason": "Why the row is not ok (NULL when it is).",
}

Inputs = dict[str, Table]  # upstream step name -> its table
Recipe = RecipeBase  # what config(recipe) reads: shared sections typed, step sections by attribute


@dataclass(frozen=True)
class RunOptions:
    retry_failed: bool = False
    debug: bool = False
    quiet: bool = False


@dataclass
class StepContext:
    """What a running step may use: never another step's internals."""

    step: str
    key: str
    store: Store
    work_dir: Path
    run_dir: Path
    models_dir: Path
    # Where the recipe file lives: relative paths in the config resolve against it. Never hashed.
    base_dir: Path = Path(".")
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


class StepModule(Protocol):
    NAME: str
    VERSION: int
    DEPENDS: tuple[str, ...]
    COLUMNS: dict[str, str]
    SECTION: str | None

    def config(self, recipe: Recipe) -> Any: ...
    def run(self, ctx: StepContext, inputs: Inputs, cfg: Any) -> Any: ...


def column_docs(module: ModuleType) -> dict[str, str]:
    """Each column's description: the step's COLUMN_DOCS over the shared status/reason ones."""
    return {**STATUS_DOCS, **getattr(module, "COLUMN_DOCS", {})}


def describe(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else module.NAME
