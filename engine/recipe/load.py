"""Load a recipe: YAML with line numbers -> JSON Schema validation -> typed, frozen Recipe.

Every problem is reported at once as `file:LINE:COL: dotted.path: message`, YAML syntax errors
included. The schema is generated from the Section classes (engine.recipe.schema); defaults
come from those classes too. Checks the schema cannot express (prompt placeholders, split
ratios, missing files) use the same format.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import Problem, RecipeError, RecipeInvalid
from engine.recipe.schema import generate_schema
from engine.recipe.section import placeholders, prompt_fields
from engine.recipe.shared import RecipeBase

PathTuple = tuple[Any, ...]


@dataclass(frozen=True)
class Located:
    """Plain data plus where each key/item of it sits in the file (1-based line, col)."""

    data: Any
    positions: dict[PathTuple, tuple[int, int]]
    file: str

    def at(self, path: PathTuple) -> tuple[int, int]:
        """Position of `path`, or of its nearest ancestor present in the file."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def has(self, path: PathTuple) -> bool:
        return tuple(path) in self.positions

    def problem(self, path: PathTuple, message: str) -> Problem:
        line, col = self.at(path)
        return Problem(self.file, line, col, dotted(path), message)


Check = Callable[[Any, Located], list[Problem]]


@dataclass(frozen=True)
class RecipeSpec:
    """What a recipe may contain: the assembled model and the cross-field checks of its steps."""

    model: type[RecipeBase]
    checks: tuple[Check, ...] = ()

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        return generate_schema(self.model)

    @functools.cached_property
    def validator(self) -> Any:
        from jsonschema import Draft202012Validator

        return Draft202012Validator(self.schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def dotted(path: PathTuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_recipe(path: str | Path, spec: RecipeSpec) -> Any:
    """Read, validate and type a recipe file; raises RecipeInvalid with every problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file (try `recipe new NAME` or `ls recipes/`)")
    located = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    return parse_located(located, path.resolve().parent, spec)


def parse_recipe(data: dict[str, Any], base_dir: Path, spec: RecipeSpec, file: str = "<recipe>") -> Any:
    """Validate plain data (tests, programmatic use) the same way a file is validated."""
    return parse_located(Located(copy.deepcopy(data), {}, file), base_dir, spec)


def parse_located(located: Located, base_dir: Path, spec: RecipeSpec) -> Any:
    problems = schema_problems(located, spec)
    recipe = None
    if not problems:
        recipe, problems = _typed(located, spec)
    if recipe is not None:
        recipe.located_at(base_dir)
        problems = cross_field_problems(located, recipe, spec)
    if problems:
        raise RecipeInvalid(sorted(problems, key=lambda p: (p.line, p.col, p.path or "")))
    return recipe


def _typed(located: Located, spec: RecipeSpec) -> tuple[RecipeBase | None, list[Problem]]:
    """The schema passed, so this only fills defaults; pydantic's own errors are kept just in case."""
    from pydantic import ValidationError

    try:
        return spec.model.model_validate(located.data), []
    except ValidationError as e:
        return None, [located.problem(tuple(err["loc"]), err["msg"]) for err in e.errors()]


# -- YAML with positions ---------------------------------------------------------------------


def parse_yaml(text: str, file: str) -> Located:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        node = YAML(typ="rt").load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {e.problem or e.context}"
        raise RecipeInvalid([Problem(file, line, col, None, message)]) from None
    except YAMLError as e:
        raise RecipeInvalid([Problem(file, 1, 1, None, f"YAML error: {e}")]) from None
    positions: dict[PathTuple, tuple[int, int]] = {(): (1, 1)}
    data = _plain(node, (), positions)
    if data is None:
        data = {}
    return Located(data, positions, file)


def _plain(node: Any, path: PathTuple, positions: dict[PathTuple, tuple[int, int]]) -> Any:
    """ruamel nodes -> plain Python, recording each key's and item's position."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out = {}
        for key in node:
            line, col = node.lc.key(key)
            positions[path + (str(key),)] = (line + 1, col + 1)
            out[str(key)] = _plain(node[key], path + (str(key),), positions)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            positions[path + (i,)] = (line + 1, col + 1)
            items.append(_plain(item, path + (i,), positions))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()  # dates stay strings: the schema asks for YYYY-MM-DD
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


# -- schema validation -----------------------------------------------------------------------


def schema_problems(located: Located, spec: RecipeSpec) -> list[Problem]:
    problems = []
    for error in spec.validator.iter_errors(located.data):
        problems.extend(_problems_from_error(located, error))
    return _dedupe(problems)


def _problems_from_error(located: Located, error: Any) -> list[Problem]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        return [located.problem(path + (k,), _unknown_key(k, allowed)) for k in extras]
    if error.validator == "required":
        return [located.problem(path, f"missing required field: {error.message.split(' ')[0]}")]
    if error.validator in ("oneOf", "anyOf") and error.context:
        # e.g. `LLMOverride | None`: report the object branch's own error (an unknown key with its hint)
        return _problems_from_error(located, _best_context(error))
    return [located.problem(path, _readable(error))]


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown field '{key}'{hint} (allowed: {', '.join(allowed)})"


def _best_context(error: Any) -> Any:
    from jsonschema.exceptions import best_match

    # Prefer the branch of the same kind as the value (a number's error, not "should be an array").
    specific = [e for e in error.context if e.validator != "type"] or list(error.context)
    return best_match(specific)


def _readable(error: Any) -> str:
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{error.instance!r} should be of type {expected}"
    if error.validator == "format":
        return f"{error.instance!r} is not a valid {error.validator_value}{_format_detail(error)}"
    if error.validator == "const":
        return f"{error.instance!r} should be {error.validator_value!r}"
    return str(error.message)


def _format_detail(error: Any) -> str:
    if error.validator_value == "regex":
        import re

        try:
            re.compile(error.instance)
        except re.error as e:
            return f" ({e})"
    if error.validator_value == "date":
        return " (use YYYY-MM-DD)"
    return ""


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if (p.line, p.col, p.path, p.message) not in seen:
            seen.add((p.line, p.col, p.path, p.message))
            out.append(p)
    return out


# -- rules the schema cannot express ---------------------------------------------------------


def cross_field_problems(located: Located, recipe: RecipeBase, spec: RecipeSpec) -> list[Problem]:
    problems = check_prompts(located, recipe)
    for check in spec.checks:  # each step's own rules (engine.steps.*.check)
        problems.extend(check(recipe, located))
    return problems


def check_prompts(located: Located, recipe: RecipeBase) -> list[Problem]:
    """Every prompt template anywhere in the recipe uses only the placeholders it declares."""
    problems = []
    for path, template, declared in prompt_fields(recipe):
        try:
            used = placeholders(template)
        except ValueError as e:
            problems.append(located.problem(path, f"bad template ({e}); write {{{{ and }}}} for literal braces"))
            continue
        allowed, required = set(declared["allowed"]), set(declared["required"])
        for unknown in sorted(used - allowed):
            problems.append(
                located.problem(
                    path,
                    f"unknown placeholder {{{unknown}}}; allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}",
                )
            )
        for missing in sorted(required - used):
            problems.append(located.problem(path, f"must contain the placeholder {{{missing}}}"))
    return problems
