"""The step contract, checked over every registered step, and the one declaration of the recipe.

A step: NAME is its module's name, DEPENDS names earlier steps only, its table carries status
and reason, run() is typed against its config, and config(recipe) is frozen and hashes the same
every time. The recipe: every schema property is a config field and every field is in the
schema; the committed schemas/recipe.schema.json is what the classes generate today.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from engine.pipeline.hashing import digest
from engine.pipeline.recipes import load_recipe, parse_recipe, recipe_spec, schema_text
from engine.steps import STEP_MODULES, available_steps
from engine.steps.base import StepContext

ROOT = Path(__file__).resolve().parents[2]
RECIPES = [ROOT / "recipes" / "demo.yaml", ROOT / "recipes" / "jason_fung.yaml"]
STEPS = available_steps()


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.NAME)
def test_name_version_depends_and_columns(step) -> None:  # noqa: ANN001
    assert step.NAME == step.__name__.rsplit(".", 1)[1]
    assert isinstance(step.VERSION, int) and step.VERSION >= 1
    earlier = [s.NAME for s in STEPS[: STEPS.index(step)]]
    assert set(step.DEPENDS) <= set(earlier), f"{step.NAME} depends on a later or unknown step"
    assert {"status", "reason"} <= set(step.COLUMNS), "every output row says whether it is ok and why not"


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.NAME)
def test_run_and_config_are_typed(step) -> None:  # noqa: ANN001
    hints = typing.get_type_hints(step.run, vars(step))
    params = list(inspect.signature(step.run).parameters)
    assert params == ["ctx", "inputs", "cfg"]
    assert hints["ctx"] is StepContext
    assert hints["cfg"] is typing.get_type_hints(step.config, vars(step))["return"]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.NAME)
def test_a_section_is_a_field_of_the_recipe(step) -> None:  # noqa: ANN001
    fields = recipe_spec().model.model_fields
    if step.SECTION is None:
        assert not hasattr(step, "Settings")
    else:
        assert step.SECTION in fields
        assert hasattr(step, "SECTION_FIELD") or fields[step.SECTION].annotation is step.Settings


@pytest.mark.parametrize("recipe_path", RECIPES, ids=lambda p: p.name)
def test_configs_are_frozen_and_hash_canonically(recipe_path: Path) -> None:
    first, second = load_recipe(recipe_path), load_recipe(recipe_path)
    for step in STEPS:
        cfg = step.config(first)
        assert _frozen(cfg), f"{step.NAME}.config() must return a frozen object"
        assert digest(cfg) == digest(step.config(second)), step.NAME
        json.dumps(json.loads(_canonical(cfg)))  # plain JSON: no objects, no paths


def _frozen(cfg: object) -> bool:
    if isinstance(cfg, BaseModel):
        return bool(cfg.model_config.get("frozen"))
    return dataclasses.is_dataclass(cfg) and type(cfg).__dataclass_params__.frozen  # type: ignore[attr-defined]


def _canonical(cfg: object) -> str:
    from engine.pipeline.hashing import canonical_json

    return canonical_json(cfg)


def keys_of(data: dict) -> dict[str, str]:
    recipe = parse_recipe(data, ROOT / "recipes")
    return {step.NAME: digest(step.config(recipe)) for step in STEPS}


BASE = {
    "name": "t",
    "creator": {"name": "Dr. Test"},
    "sources": [{"type": "local", "path": "demo"}],
    "eval": {"judge": True},
    "filters": {"llm_score": {"enabled": True}},
    "augment": {"paraphrases": 1},
}


def test_speed_settings_never_change_a_key() -> None:
    faster = {
        **BASE,
        "llm": {
            "max_concurrency": 64,
            "timeout": 5,
            "retries": 0,
            "requests_per_minute": 600,
            "api_base": "http://127.0.0.1:9/v1",
        },
        "transcripts": {"requests_per_second": 9, "retries": 0, "timeout": 1, "backoff": 0},
        "filters": {"llm_score": {"enabled": True}, "dedup": {"workers": 1}},
    }
    assert keys_of(faster) == keys_of(BASE)


def test_what_changes_the_output_changes_exactly_the_steps_that_use_it() -> None:
    base = keys_of(BASE)
    hotter = keys_of({**BASE, "llm": {"temperature": 0.1}})
    assert {n for n in base if base[n] != hotter[n]} == {"questions", "answers", "curate", "augment", "evaluate"}
    renamed = keys_of({**BASE, "name": "renamed"})
    assert {n for n in base if base[n] != renamed[n]} == {"export"}  # the name is written into the GGUF
    judge = keys_of({**BASE, "llm": {"passes": {"judge": {"model": "openai/judge"}}}})
    assert {n for n in base if base[n] != judge[n]} == {"evaluate"}


def test_every_schema_property_is_a_config_field_and_back() -> None:
    schema = recipe_spec().schema
    for name, model in _models(recipe_spec().model).items():
        node = schema if name == "Recipe" else schema["$defs"][name]
        assert set(node.get("properties", {})) == set(model.model_fields), name
        assert node.get("additionalProperties") is False, f"{name}: unknown keys must be errors"
    assert set(schema["$defs"]) == set(_models(recipe_spec().model)) - {"Recipe"}


def _models(model: type[BaseModel], found: dict | None = None) -> dict[str, type[BaseModel]]:
    """Every model class reachable from `model`'s fields, by schema name."""
    found = {} if found is None else found
    found[model.__name__] = model
    for field in model.model_fields.values():
        for sub in _classes_in(field.annotation):
            if sub.__name__ not in found:
                _models(sub, found)
    return found


def _classes_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for arg in typing.get_args(annotation) for c in _classes_in(arg)]


def test_committed_schema_is_what_the_classes_generate() -> None:
    committed = (ROOT / "schemas" / "recipe.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "schemas/recipe.schema.json is stale: run `recipe schema --write`"


def test_the_registry_fails_loudly_on_a_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.steps

    monkeypatch.setattr(engine.steps, "STEP_MODULES", (*STEP_MODULES, "engine.steps.no_such_step"))
    with pytest.raises(ModuleNotFoundError, match="no_such_step"):
        engine.steps.available_steps()
