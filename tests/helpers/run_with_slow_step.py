"""Run a recipe with the slow test step appended (used as a subprocess by the kill test)."""

import sys
from types import ModuleType

import engine.pipeline.plan
from engine.pipeline.runner import Paths, run_recipe
from engine.steps import available_steps
from engine.steps.base import RunOptions
from tests.helpers import slow_step


def steps_with_slow_step() -> list[ModuleType]:
    return [m for m in available_steps() if m.NAME in ("sources", "transcripts")] + [slow_step]


def main() -> None:
    recipe, runs_dir = sys.argv[1], sys.argv[2]
    engine.pipeline.plan.available_steps = steps_with_slow_step
    run_recipe(recipe, Paths.resolve(None, runs_dir), options=RunOptions(quiet=True))


if __name__ == "__main__":
    main()
