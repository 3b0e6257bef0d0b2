"""The building blocks of the one declaration of a recipe.

Every part of a recipe is a `Section`: a frozen pydantic model whose fields carry type, default,
description and bounds. The JSON Schema is generated from these classes (engine.recipe.schema),
so the class is the only place a setting is declared. Prompt templates declare the placeholders
they may and must use next to them (`prompt_field`); the placeholder check walks those.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import TemplateError

PLACEHOLDERS_KEY = "x-placeholders"
# A signed 64-bit integer: numpy, mlx, DuckDB and JSON tools all take these; beyond, they overflow.
MAX_INTEGER = 2**63 - 1


class Section(BaseModel):
    """A frozen recipe section: unknown keys are errors, values never change after loading.

    `UNKEYED` names fields that change how fast or how politely work is done, never its result
    (concurrency, timeouts, rate limits): the canonical hash leaves them out of step keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    UNKEYED: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _numbers_as_written(cls, data: Any) -> Any:
        """Integers are written as integers and numbers are not true/false, in every section.

        pydantic's lax mode would turn `iters: 1.0` and `iters: true` into 1; the JSON Schema check
        (engine.recipe.load) says the same, this keeps programmatic configs to the same rule.
        `allow_inf_nan=False` above keeps `.nan` and `.inf` out of every float field.
        """
        if isinstance(data, dict):  # a model validator: pydantic allows no field one on a union's tag
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if field is not None:
                    try:
                        _check_number(value, field.annotation)
                    except ValueError as e:
                        raise ValueError(f"{name}: {e}") from None
        return data

    def keyed(self) -> dict[str, Any]:
        """The fields that change a step's output (what enters its key)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name not in self.UNKEYED}


def _check_number(value: Any, annotation: Any) -> None:
    kinds = _scalar_kinds(annotation)
    if object in kinds:
        return
    if isinstance(value, bool):
        if bool not in kinds and kinds & {int, float}:
            raise ValueError(f"{str(value).lower()} is not a number")
    elif isinstance(value, int) and bool in kinds and not kinds & {int, float}:
        raise ValueError(f"{value} is not true or false")
    elif isinstance(value, str) and kinds & {int, float} and str not in kinds:
        raise ValueError(f"{value!r} is text, not a number")
    elif isinstance(value, int) and abs(value) > MAX_INTEGER and kinds & {int, float}:
        raise ValueError(f"{value} is too large: a recipe's numbers fit in 64 bits")
    elif isinstance(value, float):
        if int in kinds and float not in kinds:
            raise ValueError(f"{value!r} is not an integer (write it without a decimal point)")
    elif isinstance(value, (list, tuple)):
        for item_annotation in _item_annotations(annotation):
            for item in value:
                _check_number(item, item_annotation)


def _branches(annotation: Any) -> list[Any]:
    """The alternatives of a union (`X | None`), with Annotated[...] metadata stripped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _branches(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [b for arg in typing.get_args(annotation) for b in _branches(arg)]
    return [annotation]


def _scalar_kinds(annotation: Any) -> set[Any]:
    kinds: set[Any] = set()
    for branch in _branches(annotation):
        origin = typing.get_origin(branch)
        if branch is Any:
            kinds.add(object)
        elif origin is typing.Literal:
            kinds.update(type(v) for v in typing.get_args(branch))
        elif isinstance(branch, type) and origin is None:
            kinds.add(branch)
    return kinds


def _item_annotations(annotation: Any) -> list[Any]:
    """Element types of the tuple/list alternatives: `tuple[float, ...]` -> [float]."""
    items: list[Any] = []
    for branch in _branches(annotation):
        if typing.get_origin(branch) in (tuple, list):
            items.extend(arg for arg in typing.get_args(branch) if arg is not Ellipsis)
    return items


def prompt_field(
    default: str | None,
    *,
    allowed: frozenset[str] | set[str],
    required: frozenset[str] | set[str] = frozenset(),
    description: str,
) -> Any:
    """A prompt template field: its placeholders are documented and checked at load time."""
    names = " ".join("{" + a + "}" for a in sorted(allowed))
    declared: dict[str, Any] = {"allowed": sorted(allowed), "required": sorted(required)}
    return Field(
        default, description=f"{description} Placeholders: {names}.", json_schema_extra={PLACEHOLDERS_KEY: declared}
    )


PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def placeholders(template: str) -> set[str]:
    """Names used in a prompt template; raises TemplateError naming the offending text.

    Only plain `{name}` is allowed: str.format would also take `{questions[99999]}`,
    `{questions!r}`, `{a.b}` and `{x:>10}`, which index, convert or format the value and fail (or
    leak object internals) only when the step renders the prompt, after money is spent.
    """
    names, i = set(), 0
    while i < len(template):
        char = template[i]
        if template.startswith(("{{", "}}"), i):
            i += 2
        elif char == "}":
            raise TemplateError(
                f"a single '}}' at character {i + 1} ({_around(template, i)}); write '}}}}' for a literal brace"
            )
        elif char == "{":
            end = template.find("}", i)
            if end < 0:
                where = f"at character {i + 1} ({_around(template, i)})"
                raise TemplateError(f"a '{{' {where} is never closed; write '{{{{' for a literal brace")
            field = template[i + 1 : end]
            if not PLACEHOLDER.fullmatch(field):
                raise TemplateError(
                    f"placeholder {{{field}}} is not a plain {{name}}: indexes, attributes, conversions and "
                    "format specs are not allowed; write '{{' and '}}' for literal braces"
                )
            names.add(field)
            i = end + 1
        else:
            i += 1
    return names


def _around(template: str, i: int) -> str:
    """A few characters either side of position i, to find it in a long prompt."""
    return repr(template[max(0, i - 15) : i + 16])


def prompt_fields(
    section: BaseModel, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], str, dict[str, list[str]]]]:
    """(path, template, {allowed, required}) of every prompt set anywhere under `section`."""
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        extra = info.json_schema_extra
        if isinstance(extra, dict) and PLACEHOLDERS_KEY in extra and isinstance(value, str):
            yield path + (name,), value, extra[PLACEHOLDERS_KEY]  # type: ignore[misc]
        yield from _nested_prompts(value, path + (name,))


def _nested_prompts(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str, dict[str, list[str]]]]:
    if isinstance(value, BaseModel):
        yield from prompt_fields(value, path)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            if isinstance(item, BaseModel):
                yield from prompt_fields(item, path + (i,))
