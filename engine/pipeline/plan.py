"""Planning: which steps a recipe has, their content keys, and which are already cached.

A step's key is digest({step, version, config, upstream keys, input digests}); the run hash is
the digest of every step key, so the same recipe over the same inputs always lands in the same
run folder and a changed field invalidates exactly the steps downstream of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from engine.errors import RecipeError
from engine.pipeline.hashing import digest
from engine.pipeline.store import Store
from engine.recipe.shared import RecipeBase as Recipe
from engine.steps import available_steps, step_order


@dataclass(frozen=True)
class PlannedStep:
    name: str
    module: ModuleType = field(repr=False, compare=False)
    key: str
    config: Any = field(repr=False)
    upstream: dict[str, str]
    fingerprint: Any = field(repr=False, compare=False)
    cached: bool
    failed: int = field(default=0, compare=False)  # rows of its cached table that failed (retryable)

    @property
    def status(self) -> str:
        if self.cached:
            return f"cached, {self.failed} failed (--retry-failed asks them again)" if self.failed else "cached"
        return f"to run (asks {self.failed} failed again)" if self.failed else "to run"


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    steps: tuple[PlannedStep, ...]

    @property
    def run_hash(self) -> str:
        return digest({s.name: s.key for s in self.steps})

    @property
    def run_id(self) -> str:
        """Folder name under runs/: short but collision-safe for a person's experiments."""
        return self.run_hash[:12]

    def step(self, name: str) -> PlannedStep:
        return next(s for s in self.steps if s.name == name)


def select_steps(until: str | None) -> list[ModuleType]:
    """Available step modules in order, cut after `until`, dropping any whose upstream is missing."""
    order = step_order()
    if until is not None and until not in order:
        raise RecipeError(f"--until {until}: no such step; steps are: {', '.join(order)}")
    chosen: list[ModuleType] = []
    for module in available_steps():
        if all(dep in {m.NAME for m in chosen} for dep in module.DEPENDS):
            chosen.append(module)
        if module.NAME == until:
            break
    if until is not None and until not in {m.NAME for m in chosen}:
        raise RecipeError(f"--until {until}: that step is not available in this version of recipe")
    return chosen


def make_plan(
    recipe: Recipe,
    store: Store,
    context_for: Callable[[str], Any],
    until: str | None = None,
    force: tuple[str, ...] = (),
) -> Plan:
    """Key every step; `force` marks those steps and everything downstream as to run."""
    order = step_order()
    unknown = [f for f in force if f not in order]
    if unknown:
        raise RecipeError(f"--force {unknown[0]}: no such step; steps are: {', '.join(order)}")
    keys: dict[str, str] = {}
    dirty: set[str] = set(force)
    planned = []
    for module in select_steps(until):
        step = _plan_step(module, recipe, store, context_for, keys, dirty)
        keys[step.name] = step.key
        planned.append(step)
    return Plan(recipe, tuple(planned))


def _plan_step(
    module: ModuleType,
    recipe: Recipe,
    store: Store,
    context_for: Callable[[str], Any],
    keys: dict[str, str],
    dirty: set[str],
) -> PlannedStep:
    config = module.config(recipe)
    fingerprint = None
    if hasattr(module, "fingerprint"):  # reads the outside world: files, a channel listing
        fingerprint = module.fingerprint(context_for(module.NAME), config)
    upstream = {dep: keys[dep] for dep in module.DEPENDS}
    key = digest(
        {
            "step": module.NAME,
            "version": module.VERSION,
            "config": config,
            "upstream": upstream,
            "inputs": digest(fingerprint),
        }
    )
    if any(dep in dirty for dep in module.DEPENDS):
        dirty.add(module.NAME)
    cached = module.NAME not in dirty and store.has(key)
    return PlannedStep(module.NAME, module, key, config, upstream, fingerprint, cached)
