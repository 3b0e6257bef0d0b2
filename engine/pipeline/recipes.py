"""The whole recipe, assembled from the shared sections and every registered step's own.

`recipe_spec()` builds the pydantic `Recipe` model (one field per step SECTION, one
`llm.passes` entry per step LLM pass) and collects the steps' cross-field checks; the JSON
Schema is generated from it. Built on first use and cached per registry, so registering a
step (a module and a line in engine.steps.STEP_MODULES) is all it takes to extend a recipe.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import Field, create_model

import engine.steps
from engine.recipe import load
from engine.recipe.load import RecipeSpec
from engine.recipe.section import Section
from engine.recipe.shared import LLM, LLMOverride, RecipeBase
from engine.steps import available_steps


def recipe_spec() -> RecipeSpec:
    """The spec of the steps registered right now (read at call time: tests register steps)."""
    return _spec_for(engine.steps.STEP_MODULES)


@functools.cache
def _spec_for(modules: tuple[str, ...]) -> RecipeSpec:
    steps = available_steps(modules)
    checks = tuple(step.check for step in steps if hasattr(step, "check"))
    return RecipeSpec(build_model(steps), checks)


def build_model(steps: list[ModuleType]) -> type[RecipeBase]:
    fields: dict[str, Any] = {
        "llm": (_llm_model(steps), Field(default_factory=_llm_model(steps), description=LLM.__doc__))
    }
    for step in steps:
        if getattr(step, "SECTION", None) is None:
            continue
        if hasattr(step, "SECTION_FIELD"):  # e.g. sources: a required list, not a section object
            fields[step.SECTION] = step.SECTION_FIELD
        else:
            fields[step.SECTION] = (
                step.Settings,
                Field(default_factory=step.Settings, description=step.Settings.__doc__),
            )
    return create_model("Recipe", __base__=RecipeBase, __doc__=RecipeBase.__doc__, **fields)


@functools.cache
def _llm_model_for(passes: tuple[tuple[str, str], ...]) -> type[LLM]:
    overrides: dict[str, Any] = {
        name: (LLMOverride | None, Field(None, description=f"Override for the `{name}` pass ({step} step)."))
        for name, step in passes
    }
    passes_model = create_model(
        "Passes", __base__=Section, __doc__="Overrides per pass, e.g. a cheaper model for paraphrases.", **overrides
    )
    return create_model(
        "LLM",
        __base__=LLM,
        __doc__=LLM.__doc__,
        passes=(passes_model, Field(default_factory=passes_model, description=passes_model.__doc__)),
    )


def _llm_model(steps: list[ModuleType]) -> type[LLM]:
    return _llm_model_for(tuple((name, step.NAME) for step in steps for name in getattr(step, "LLM_PASSES", ())))


# -- the recipe API the CLI, the runner and tests use ------------------------------------------


def load_recipe(path: str | Path) -> Any:
    """Read, validate and type a recipe file; raises RecipeInvalid with every problem."""
    return load.load_recipe(path, recipe_spec())


def parse_recipe(data: dict[str, Any], base_dir: Path, file: str = "<recipe>") -> Any:
    """Validate plain data (tests, programmatic use) the same way a file is validated."""
    return load.parse_recipe(data, base_dir, recipe_spec(), file)


def resolved(recipe: RecipeBase) -> dict[str, Any]:
    """The recipe as plain data with every default filled in (resolved.json)."""
    return recipe.model_dump(mode="json")


def json_schema() -> dict[str, Any]:
    return recipe_spec().schema


def schema_text() -> str:
    """The schema as committed: stable key order, two-space indent, trailing newline."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")
    return path
