"""Every number in a recipe is finite and every integer is written as one, in every section.

Before: `.nan` and `.inf` were accepted (then a crash mid-run), and `1.0` or `true` where an
integer is required were accepted by the schema and quietly turned into 1 by pydantic. The
rule lives in two places that must agree, both written once: the schema's type checker
(engine.recipe.load) and `Section` (engine.recipe.section). These tests walk every field, so a
step added later is covered without a new test.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from engine.errors import RecipeInvalid
from engine.pipeline.recipes import json_schema, parse_recipe, recipe_spec
from engine.recipe.load import dotted
from engine.recipe.section import Section

MINIMAL = {"name": "r", "creator": {"name": "A"}, "sources": [{"type": "local", "path": "t.txt"}]}


def numeric_leaves(schema: dict, node: dict, path: tuple = ()) -> Iterator[tuple[tuple, set[str], int]]:
    """(path, JSON types, a valid integer) of every integer/number property reachable through objects."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    kinds = node.get("type", [])
    kinds = set(kinds if isinstance(kinds, list) else [kinds])
    bounds = dict(node)
    for branch in node.get("anyOf", []):
        if "$ref" in branch:
            yield from numeric_leaves(schema, branch, path)
        elif isinstance(branch.get("type"), str):
            kinds.add(branch["type"])
            bounds.update(branch)
    if kinds & {"integer", "number"} and path:
        yield path, kinds, _valid_integer(bounds)
    for name, sub in node.get("properties", {}).items():
        yield from numeric_leaves(schema, sub, path + (name,))


def _valid_integer(bounds: dict) -> int:
    low = math.floor(bounds.get("exclusiveMinimum", 0)) + 1 if "exclusiveMinimum" in bounds else None
    low = max(x for x in (low, bounds.get("minimum"), 3) if x is not None)
    high = bounds.get("maximum", math.inf)
    return math.floor(high) if low > high else math.ceil(low)


LEAVES = list(numeric_leaves(json_schema(), json_schema()))
INTEGERS = [(path, good) for path, kinds, good in LEAVES if "integer" in kinds and "number" not in kinds]
NUMBERS = [path for path, kinds, _ in LEAVES if "number" in kinds]


def recipe_with(path: tuple, value: Any) -> dict:
    data: dict = {**MINIMAL}
    node = data
    for part in path[:-1]:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[path[-1]] = value
    return data


def problems_for(data: dict, tmp_path: Path) -> list[str]:
    (tmp_path / "t.txt").write_text("So, insulin.")
    with pytest.raises(RecipeInvalid) as info:
        parse_recipe(data, tmp_path)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_the_walk_finds_the_numeric_fields_of_every_section() -> None:
    found = {path[0] for path in [p for p, _ in INTEGERS] + NUMBERS}
    assert {"llm", "train", "questions", "split", "eval", "filters", "augment"} <= found
    assert {("llm", "passes", "judge", "max_tokens"), ("train", "lora", "rank")} <= {p for p, _ in INTEGERS}
    assert ("train", "learning_rate") in NUMBERS
    assert len(INTEGERS) > 30 and len(NUMBERS) > 15


@pytest.mark.parametrize(("path", "good"), INTEGERS, ids=[dotted(p) for p, _ in INTEGERS])
def test_every_integer_field_rejects_a_float_and_a_boolean(path: tuple, good: int, tmp_path: Path) -> None:
    field = dotted(path)
    assert problems_for(recipe_with(path, float(good)), tmp_path) == [
        f"{field}: {float(good)!r} should be a whole number written without a decimal point ({good})"
    ]
    [problem] = problems_for(recipe_with(path, True), tmp_path)
    assert problem.startswith(f"{field}: true should be of type integer")


@pytest.mark.parametrize("path", NUMBERS, ids=dotted)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_every_number_field_rejects_nan_and_infinity(path: tuple, value: float, tmp_path: Path) -> None:
    [problem] = problems_for(recipe_with(path, value), tmp_path)
    assert problem.endswith("is not allowed: a number must be finite"), problem
    assert problem.startswith(f"{dotted(path)}: ")


def sections(model: type[BaseModel], seen: dict[str, type[BaseModel]] | None = None) -> dict[str, type[BaseModel]]:
    """Every Section class reachable from the assembled Recipe model (through unions and tuples)."""
    seen = {} if seen is None else seen
    for info in model.model_fields.values():
        for candidate in _classes(info.annotation):
            if issubclass(candidate, Section) and candidate.__name__ not in seen:
                seen[candidate.__name__] = candidate
                sections(candidate, seen)
    return seen


def _classes(annotation: Any) -> Iterator[type]:
    if isinstance(annotation, type):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _classes(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        yield from _classes(meta)


def _scalar_types(annotation: Any) -> set[type]:
    found = {annotation} if isinstance(annotation, type) else set()
    for arg in getattr(annotation, "__args__", ()) or ():
        found |= _scalar_types(arg)
    return found


SECTION_FIELDS = [
    (cls, name, info.annotation)
    for cls in sections(recipe_spec().model).values()
    for name, info in cls.model_fields.items()
    if _scalar_types(info.annotation) & {int, float}
]


@pytest.mark.parametrize(
    ("cls", "name", "annotation"), SECTION_FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _ in SECTION_FIELDS]
)
def test_every_section_keeps_the_same_rule_for_programmatic_configs(cls: type, name: str, annotation: Any) -> None:
    """parse_recipe, tests and steps build Sections from dicts without the schema in front."""
    integer = float not in _scalar_types(annotation)
    bad = [True, "3", 2**64] + ([3.0] if integer else [math.nan, math.inf])
    for value in bad:
        with pytest.raises(ValidationError) as info:
            cls.model_validate({name: value})
        text = str(info.value)
        assert f"{name}: " in text or "finite number" in text, (value, text)


@pytest.mark.parametrize(("path", "good"), INTEGERS[:5], ids=[dotted(p) for p, _ in INTEGERS[:5]])
def test_integers_beyond_64_bits_are_too_large(path: tuple, good: int, tmp_path: Path) -> None:
    [problem] = problems_for(recipe_with(path, 2**63), tmp_path)
    assert problem == f"{dotted(path)}: {2**63} is too large: a recipe's numbers fit in 64 bits (at most {2**63 - 1})"
