"""Any hostile value at any place of a real recipe is a RecipeError, never a crash.

The demo recipe's every key and list item in turn gets values of every wrong shape (and a few
that once slipped through: nan, a float for an int, an indexed placeholder, a URL with a
password, a path outside the tree). Loading either succeeds or raises RecipeError; anything else
is a crash path a user could hit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import RecipeError
from engine.pipeline.recipes import recipe_spec
from engine.recipe.file_text import read_text
from engine.recipe.load import Located, parse_located, parse_yaml

DEMO = Path(__file__).parents[2] / "recipes" / "demo.yaml"
HOSTILE: list[Any] = [
    None,
    True,
    -1,
    2**70,
    3.0,
    math.nan,
    "",
    "{x[0]}",
    [],
    [{}],
    {"a": 1},
    "/dev/null",
    "http://u:p@h",
]


def places(data: Any, prefix: tuple = ()) -> Iterator[tuple]:
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        yield prefix + (key,)
        yield from places(value, prefix + (key,))


def with_value(data: Any, place: tuple, value: Any) -> Any:
    changed = copy.deepcopy(data)
    node = changed
    for part in place[:-1]:
        node = node[part]
    node[place[-1]] = value
    return changed


def test_no_value_anywhere_crashes_validation() -> None:
    located = parse_yaml(read_text(DEMO), str(DEMO))
    spec, base = recipe_spec(), DEMO.parent
    tried, crashes = 0, []
    for place in places(located.data):
        for value in HOSTILE:
            tried += 1
            try:
                parse_located(Located(with_value(located.data, place, value), located.positions, str(DEMO)), base, spec)
            except RecipeError:
                pass
            except Exception as e:  # noqa: BLE001 - what this test looks for
                crashes.append(f"{place} = {value!r}: {type(e).__name__}: {e}")
    assert tried > 500
    assert crashes == []


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_values_are_located_at_their_key(value: Any) -> None:
    located = parse_yaml(read_text(DEMO), str(DEMO))
    place = ("train", "lora", "rank")
    data = with_value(located.data, place, value)
    with pytest.raises(RecipeError) as info:
        parse_located(Located(data, located.positions, str(DEMO)), DEMO.parent, recipe_spec())
    problems = getattr(info.value, "problems", [])
    assert any(p.path == "train.lora.rank" and (p.line, p.col) == located.at(place) for p in problems)
