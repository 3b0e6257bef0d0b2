"""The step registry: pipeline order and lazy module lookup.

Adding a step = one module here, one schema fragment, one line in STEP_ORDER, its tests.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Pipeline order. A step runs after everything it DEPENDS on; this order breaks ties.
STEP_ORDER: tuple[str, ...] = (
    "sources", "transcripts", "questions", "answers", "curate", "augment", "split",
    "train", "export", "evaluate",
)


def load_step(name: str) -> ModuleType:
    return importlib.import_module(f"engine.steps.{name}")


def available_steps() -> list[ModuleType]:
    """Step modules that exist, in pipeline order (later issues add the missing ones)."""
    found = []
    for name in STEP_ORDER:
        try:
            found.append(load_step(name))
        except ModuleNotFoundError as e:
            if e.name != f"engine.steps.{name}":
                raise
    return found
