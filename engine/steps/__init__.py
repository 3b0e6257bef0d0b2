"""The step registry: which steps a recipe has, in pipeline order.

Adding a step = one module (NAME, VERSION, DEPENDS, COLUMNS, SECTION + Settings, config, run),
one line in STEP_MODULES, its tests. The recipe model, the JSON Schema, `recipe plan`,
`recipe show` and `recipe diff` all follow this list; docs/adding-a-step.md walks through it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Pipeline order. A step runs after everything it DEPENDS on, which must come earlier here.
STEP_MODULES: tuple[str, ...] = (
    "engine.steps.sources",
    "engine.steps.transcripts",
    "engine.steps.questions",
    "engine.steps.answers",
    "engine.steps.curate",
    "engine.steps.augment",
    "engine.steps.split",
    "engine.steps.train",
    "engine.steps.export",
    "engine.steps.evaluate",
)


def load_step(name: str) -> ModuleType:
    """The module of a registered step, by its NAME."""
    for module in available_steps():
        if module.NAME == name:
            return module
    raise KeyError(f"no step named {name!r}; steps are: {', '.join(step_order())}")


def available_steps(modules: tuple[str, ...] | None = None) -> list[ModuleType]:
    """Every registered step module (or those of `modules`), in order. A missing module is a
    broken install: it fails loudly here rather than silently shortening the pipeline."""
    return [importlib.import_module(path) for path in (STEP_MODULES if modules is None else modules)]


def step_order() -> tuple[str, ...]:
    return tuple(module.NAME for module in available_steps())
