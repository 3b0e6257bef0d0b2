"""The building blocks of the one declaration of a recipe.

Every part of a recipe is a `Section`: a frozen pydantic model whose fields carry type, default,
description and bounds. The JSON Schema is generated from these classes (engine.recipe.schema),
so the class is the only place a setting is declared. Prompt templates declare the placeholders
they may and must use next to them (`prompt_field`); the placeholder check walks those.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

PLACEHOLDERS_KEY = "x-placeholders"


class Section(BaseModel):
    """A frozen recipe section: unknown keys are errors, values never change after loading.

    `UNKEYED` names fields that change how fast or how politely work is done, never its result
    (concurrency, timeouts, rate limits): the canonical hash leaves them out of step keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    UNKEYED: ClassVar[frozenset[str]] = frozenset()

    def keyed(self) -> dict[str, Any]:
        """The fields that change a step's output (what enters its key)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name not in self.UNKEYED}


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


def placeholders(template: str) -> set[str]:
    """Names used in a str.format template; raises ValueError on unbalanced braces."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.add(name.split(".")[0].split("[")[0])
    return names


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
