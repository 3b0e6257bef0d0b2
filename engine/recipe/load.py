"""Load a recipe: bytes -> YAML with line numbers -> JSON Schema validation -> typed, frozen Recipe.

Every problem is reported at once as `file:LINE:COL: dotted.path: message`, YAML syntax errors
included. The bytes and the YAML are read within limits (engine.recipe.file_text,
engine.recipe.yaml_reader). The schema is generated from the Section classes
(engine.recipe.schema); defaults come from those classes too. Rules the schema cannot express
use the same format: on the raw data (prompt placeholders, credentials in URLs:
engine.recipe.rules) and on the typed recipe (each step's `check`: split ratios, missing files
and models).
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import Problem, RecipeError, RecipeInvalid
from engine.recipe import file_text, yaml_reader
from engine.recipe.located import Located, PathTuple, dotted
from engine.recipe.rules import raw_problems
from engine.recipe.schema import generate_schema
from engine.recipe.section import MAX_INTEGER
from engine.recipe.shared import RecipeBase

__all__ = ["Located", "PathTuple", "RecipeSpec", "dotted", "load_recipe", "parse_recipe"]
SHOWN_CHARS = 60  # a value quoted in a message is cut to this: a pasted transcript is no message


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
        from jsonschema import Draft202012Validator, validators

        # JSON has no NaN or infinity and YAML's `1.0` is a float: a recipe's numbers are finite and
        # its integers written as integers (as the Sections check them; see engine.recipe.section).
        checker = Draft202012Validator.TYPE_CHECKER.redefine_many(
            {"integer": lambda _, v: is_integer(v), "number": lambda _, v: is_finite_number(v)}
        )
        strict = validators.extend(Draft202012Validator, type_checker=checker)  # type: ignore[no-untyped-call]
        return strict(self.schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INTEGER


def is_finite_number(value: Any) -> bool:
    return is_integer(value) or (isinstance(value, float) and math.isfinite(value))


def load_recipe(path: str | Path, spec: RecipeSpec) -> Any:
    """Read, validate and type a recipe file; raises RecipeInvalid with every problem."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a folder, not a recipe file (name the .yaml file inside it)")
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file (try `recipe new NAME` or `ls recipes/`)")
    located = parse_yaml(file_text.read_text(path), str(path))
    return parse_located(located, path.resolve().parent, spec)


def parse_recipe(data: dict[str, Any], base_dir: Path, spec: RecipeSpec, file: str = "<recipe>") -> Any:
    """Validate plain data (tests, programmatic use) the same way a file is validated."""
    return parse_located(Located(copy.deepcopy(data), {}, file), base_dir, spec)


def parse_located(located: Located, base_dir: Path, spec: RecipeSpec) -> Any:
    """Every problem at once: the schema's, the raw-data rules', and the steps' own checks."""
    problems = schema_problems(located, spec)
    raw = raw_problems(located, spec.schema)  # prompts, credentials: also when the schema fails
    recipe = None
    if problems:
        problems += _clean_section_problems(located, base_dir, spec, problems)
    else:
        recipe, problems = _typed(located, spec)
    if recipe is not None:
        recipe.located_at(base_dir)
        problems = step_problems(located, recipe, spec)
    problems = _dedupe(problems + raw)
    if problems:
        raise RecipeInvalid(sorted(problems, key=lambda p: (p.line, p.col, p.path or "")))
    return recipe


def _clean_section_problems(located: Located, base_dir: Path, spec: RecipeSpec, found: list[Problem]) -> list[Problem]:
    """The steps' checks of the sections the schema found nothing wrong with.

    So a recipe with a bad number in `split` and a missing model in `train` hears about both at
    once. The broken top-level sections are left out (defaults stand in); what the checks say
    about them is dropped, since it would be about defaults, not what the file says.
    """
    from pydantic import ValidationError

    broken = {_section_of(p.path) for p in found}
    if "" in broken or not isinstance(located.data, dict):
        return []  # a problem at the root (a missing `name`): no typed recipe to check
    clean = {k: v for k, v in located.data.items() if k not in broken}
    try:
        recipe = spec.model.model_validate(clean)
    except ValidationError:
        return []
    recipe.located_at(base_dir)
    return [p for p in step_problems(located, recipe, spec) if _section_of(p.path) not in broken]


def _section_of(path: str | None) -> str:
    return re.split(r"[.\[]", path or "", maxsplit=1)[0]


def _typed(located: Located, spec: RecipeSpec) -> tuple[RecipeBase | None, list[Problem]]:
    """The schema passed, so this only fills defaults; pydantic's own errors are kept just in case."""
    from pydantic import ValidationError

    try:
        return spec.model.model_validate(located.data), []
    except ValidationError as e:
        return None, [located.problem(_data_path(located.data, err["loc"]), err["msg"]) for err in e.errors()]


def _data_path(data: Any, loc: tuple[Any, ...]) -> PathTuple:
    """pydantic's error location without its union-member labels (`learning_rate.constrained-float`)."""
    path: list[Any] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            continue
        path.append(part)
    return tuple(path)


# -- YAML with positions ---------------------------------------------------------------------


def parse_yaml(text: str, file: str) -> Located:
    """The recipe text as plain data with positions (see engine.recipe.yaml_reader for the limits)."""
    data, positions = yaml_reader.parse_text(text, file)
    return Located({} if data is None else data, positions, file)


# -- schema validation -----------------------------------------------------------------------


def schema_problems(located: Located, spec: RecipeSpec) -> list[Problem]:
    errors = list(spec.validator.iter_errors(located.data))
    # `by: 3` breaks both `enum` and `type`; the enum's message lists the values, which is enough.
    enums = {tuple(e.absolute_path) for e in errors if e.validator == "enum"}
    problems = []
    for error in errors:
        if not (error.validator == "type" and tuple(error.absolute_path) in enums):
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
        kinds = [e.validator_value for e in error.context if e.validator == "type" and not e.path]
        if len(kinds) == len(error.context):  # a value of none of the types: name them all
            return [located.problem(path, _type_message(error.instance, _flat(kinds)))]
        # e.g. `LLMOverride | None`: report the object branch's own error (an unknown key with its hint)
        return _problems_from_error(located, _best_context(error))
    return [located.problem(path, _readable(error))]


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown field '{key}'{hint} (allowed: {', '.join(allowed)})"


def _best_context(error: Any) -> Any:
    from jsonschema.exceptions import best_match

    # Prefer the branch of the same kind as the value (a number's error, not "should be an array"):
    # drop the branches that fail only because the value is of another type.
    specific = [e for e in error.context if not (e.validator == "type" and not e.path)] or list(error.context)
    return best_match(specific)


def _readable(error: Any) -> str:
    if error.validator == "enum":
        return f"{shown(error.instance)} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "type":
        return _type_message(error.instance, _flat([error.validator_value]))
    if error.validator == "format":
        return f"{shown(error.instance)} is not a valid {error.validator_value}{_format_detail(error)}"
    if error.validator == "const":
        return f"{shown(error.instance)} should be {error.validator_value!r}"
    return str(error.message).replace(repr(error.instance), shown(error.instance))


def _flat(kinds: list[Any]) -> list[str]:
    out: list[str] = []
    for kind in kinds:
        out.extend(k for k in (kind if isinstance(kind, list) else [kind]) if k not in out)
    return out


def _type_message(value: Any, expected: list[str]) -> str:
    numeric = {"number", "integer"} & set(expected)
    if isinstance(value, float) and not math.isfinite(value) and numeric:
        return f"{shown(value)} is not allowed: a number must be finite"
    if isinstance(value, int) and not isinstance(value, bool) and numeric:
        return f"{shown(value)} is too large: a recipe's numbers fit in 64 bits (at most {MAX_INTEGER})"
    if isinstance(value, float) and "integer" in expected and "number" not in expected and value.is_integer():
        return f"{shown(value)} should be a whole number written without a decimal point ({int(value)})"
    return f"{shown(value)} should be of type {' or '.join(expected)}"


def shown(value: Any) -> str:
    """A value as the recipe spells it (`true`, `null`, `.nan`), cut short if long."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float) and not math.isfinite(value):
        text = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    else:
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 5]}...{text[-2:]} ({len(text):,} characters)"


def _format_detail(error: Any) -> str:
    if error.validator_value == "regex":
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


def step_problems(located: Located, recipe: RecipeBase, spec: RecipeSpec) -> list[Problem]:
    """Each step's own rules (engine.steps.*.check) on the typed recipe."""
    problems: list[Problem] = []
    for check in spec.checks:
        problems.extend(check(recipe, located))
    return problems
