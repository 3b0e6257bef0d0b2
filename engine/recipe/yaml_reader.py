"""Recipe text into plain data with positions, safely, whatever the text holds.

A recipe is small, plain YAML: mappings, lists, strings, numbers, true/false and null. This
reader builds exactly that from the parser's event stream, in one iterative pass, so that no
text can make it crash, hang or eat memory (engine.recipe.file_text bounds and decodes the bytes):

- nesting: at most MAX_DEPTH levels (no recursion, so no RecursionError);
- values: at most MAX_VALUES (the pure-Python parser reads 25,000-40,000 a second); what aliases
  expand to counts against MAX_ALIAS_VALUES (a "billion laughs" file stops at the alias that
  crosses it);
- tags: only the YAML core ones (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!map`,
  `!!seq`); `!!python/...`, `!!binary`, local `!tags` are errors at their line;
- scalars: the YAML 1.2 core schema; dates stay strings (a recipe has no date values, and the
  schema checks a date field's format), so an impossible date is never constructed.

Every problem is a RecipeInvalid of one `file:line:col: message` Problem.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any, cast

from engine.errors import Problem, RecipeInvalid, TextProblem

MAX_DEPTH = 50  # a real recipe nests 4 deep (llm.passes.questions.model)
MAX_ALIAS_VALUES = 10_000  # values that aliases may add in all; sharing an `llm` block costs ~10
MAX_VALUES = 20_000  # a real recipe has a few hundred; the parser reads 20,000 in under a second

PathTuple = tuple[Any, ...]
Positions = dict[PathTuple, tuple[int, int]]

CORE = "tag:yaml.org,2002:"
# What an explicitly tagged scalar (`!!int "5"`) must read as; `!!str` is any text.
EXPLICIT: dict[str, tuple[type, ...]] = {
    CORE + "int": (int,),
    CORE + "float": (int, float),
    CORE + "bool": (bool,),
    CORE + "null": (type(None),),
}
SCALAR_TAGS = {CORE + "str", *EXPLICIT}
# YAML 1.2 core schema (plus `_` between digits, as ruamel reads them); anything else is a string.
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9][0-9_]*|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}


# -- text -> plain data with positions -----------------------------------------------------------


def parse_text(text: str, file: str) -> tuple[Any, Positions]:
    """(data, positions of every key and list item); raises RecipeInvalid with one located problem."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    builder = _Builder()
    try:
        builder.feed_all(text)
    except TextProblem as stop:
        raise RecipeInvalid([Problem(file, stop.line, stop.col, None, stop.message)]) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RecipeInvalid([Problem(file, line, col, None, f"YAML syntax error: {e.problem or e.context}")]) from None
    except ReaderError as e:  # a control character the YAML reader refuses; it knows only the offset
        line, col = _text_line_col(text, e.position)
        code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "?")
        message = f"YAML error: the control character {chr(code)!r} (U+{code:04X}) is not allowed; remove it"
        raise RecipeInvalid([Problem(file, line, col, None, message)]) from None
    except YAMLError as e:
        raise RecipeInvalid([Problem(file, 1, 1, None, f"YAML error: {e}")]) from None
    return builder.result, builder.positions


def _text_line_col(text: str, offset: int) -> tuple[int, int]:  # 1-based
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


@dataclass
class _Collection:
    """A mapping or list being built; `size` counts its values (for the alias budget)."""

    value: dict[str, Any] | list[Any]
    path: PathTuple
    anchor: str | None
    size: int = 1
    key: str | None = None  # a mapping's key waiting for its value
    key_at: tuple[int, int] = (1, 1)
    merges: list[tuple[Any, tuple[int, int]]] = field(default_factory=list)  # `<<: *base` values


class _Builder:
    """Plain data from parser events, with an explicit stack instead of recursion."""

    def __init__(self) -> None:
        self.stack: list[_Collection] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.alias_values = 0
        self.values = 0
        self.documents = 0
        self.result: Any = None
        self.positions: Positions = {(): (1, 1)}

    def feed_all(self, text: str) -> None:
        from ruamel.yaml import YAML

        for event in YAML(typ="safe", pure=True).parse(text):
            self.feed(event)

    def feed(self, event: Any) -> None:
        kind = type(event).__name__
        at = (event.start_mark.line + 1, event.start_mark.column + 1)
        if kind == "DocumentStartEvent":
            self.documents += 1
            if self.documents > 1:
                raise TextProblem(*at, "a second YAML document (`---`); a recipe is one document")
        elif kind == "ScalarEvent":
            self._scalar(event, at)
        elif kind in ("MappingStartEvent", "SequenceStartEvent"):
            self._start(event, at, {} if kind == "MappingStartEvent" else [])
        elif kind in ("MappingEndEvent", "SequenceEndEvent"):
            self._end()
        elif kind == "AliasEvent":
            self._alias(event, at)

    # -- events

    def _scalar(self, event: Any, at: tuple[int, int]) -> None:
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and top.key is None:
            self._key(top, event, at)
            return
        self._count(1, at)
        value = scalar_value(event, at)
        self._remember(event.anchor, value, 1)
        self._attach(value, 1, at)

    def _key(self, top: _Collection, event: Any, at: tuple[int, int]) -> None:
        if event.tag is None and event.implicit[0] and event.value == "<<":
            top.key = "<<"  # a merge key: its value is merged in at the mapping's end
        else:
            scalar_value(event, at)  # a key's tag is checked like a value's
            key = event.value  # as written: `1:` is the key "1", `true:` the key "true"
            if key in top.value:
                first = self.positions.get(top.path + (key,), at)
                raise TextProblem(*at, f"duplicate key '{key}' (first at line {first[0]}); a key may appear once")
            top.key = key
        top.key_at = at

    def _start(self, event: Any, at: tuple[int, int], value: dict[str, Any] | list[Any]) -> None:
        wanted = CORE + ("map" if isinstance(value, dict) else "seq")
        if event.tag not in (None, "!", wanted):
            raise TextProblem(*at, _tag_message(event.tag))
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and top.key is None:
            raise TextProblem(*at, "a key must be a plain value (text or a number), not a list or mapping")
        if len(self.stack) >= MAX_DEPTH:
            raise TextProblem(*at, f"nested more than {MAX_DEPTH} levels deep; a recipe nests a few levels at most")
        self._count(1, at)
        path = self._child_path(at)
        self.stack.append(_Collection(value, path, event.anchor))

    def _end(self) -> None:
        done = self.stack.pop()
        if isinstance(done.value, dict):
            self._apply_merges(done)
        self._remember(done.anchor, done.value, done.size)
        self._attach(done.value, done.size, None)

    def _alias(self, event: Any, at: tuple[int, int]) -> None:
        if event.anchor not in self.anchors:
            raise TextProblem(*at, f"alias *{event.anchor} names no anchor (&{event.anchor}) above it")
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and top.key is None:
            raise TextProblem(*at, "a key must be a plain value, not an alias")
        value, size = self.anchors[event.anchor]
        self.alias_values += size
        if self.alias_values > MAX_ALIAS_VALUES:
            raise TextProblem(
                *at,
                f"aliases expand to more than {MAX_ALIAS_VALUES:,} values (at *{event.anchor}); "
                "write the values out, or use fewer nested aliases",
            )
        self._count(size, at)
        self._child_path(at)
        self._attach(copy.deepcopy(value), size, None)

    # -- building

    def _count(self, values: int, at: tuple[int, int]) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            raise TextProblem(
                *at, f"more than {MAX_VALUES:,} values; a recipe has a few hundred (is this the right file?)"
            )

    def _child_path(self, at: tuple[int, int]) -> PathTuple:
        """The path of the value starting now; records a list item's position."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            path = top.path + (len(top.value),)
            self.positions[path] = at
            return path
        return top.path + (top.key,)

    def _attach(self, value: Any, size: int, at: tuple[int, int] | None) -> None:
        if not self.stack:
            self.result = value
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.value, list):
            if at is not None:  # a scalar item: collections recorded their position at their start
                self.positions[top.path + (len(top.value),)] = at
            top.value.append(value)
        elif top.key == "<<":
            top.merges.append((value, top.key_at))
            top.key = None
        else:
            assert top.key is not None
            self.positions[top.path + (top.key,)] = top.key_at
            top.value[top.key] = value
            top.key = None

    def _apply_merges(self, mapping: _Collection) -> None:
        """`<<: *base` (or a list of them): keys the mapping does not set itself come from the bases."""
        assert isinstance(mapping.value, dict)
        for value, at in mapping.merges:
            for base in value if isinstance(value, list) else [value]:
                if not isinstance(base, dict):
                    raise TextProblem(*at, "`<<` merges a mapping (or a list of mappings) into this one")
                for key, item in base.items():
                    if key not in mapping.value:
                        mapping.value[key] = item
                        self.positions[mapping.path + (key,)] = at  # a problem in it shows at the `<<`

    def _remember(self, anchor: str | None, value: Any, size: int) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, size)


def scalar_value(event: Any, at: tuple[int, int]) -> Any:
    """The value of a scalar: the core-schema type of a plain one, a string if quoted."""
    tag, text = event.tag, event.value
    if tag is None and event.implicit[0]:
        return _implicit(text)
    if tag is None or tag == "!" or tag == CORE + "str":
        return text
    if tag not in SCALAR_TAGS:
        raise TextProblem(*at, _tag_message(tag))
    value: Any = _implicit(text)
    if not isinstance(value, EXPLICIT[tag]) or (tag != CORE + "bool" and isinstance(value, bool)):
        raise TextProblem(*at, f"{text!r} is not a valid {_short(tag)}")
    return float(cast(float, value)) if tag == CORE + "float" else value


def _implicit(text: str) -> Any:
    if _NULL.fullmatch(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        return _integer(text)
    if text.lower() in _SPECIAL_FLOAT and text[-3:] in ("inf", "Inf", "INF", "nan", "NaN", "NAN"):
        return _SPECIAL_FLOAT[text.lower()]
    if _FLOAT.fullmatch(text):
        return float(text.replace("_", ""))
    return text


def _integer(text: str) -> int | str:
    digits = text.replace("_", "")
    base = 16 if digits.startswith("0x") else 8 if digits.startswith("0o") else 10
    try:
        return int(digits[2:] if base != 10 else digits, base)
    except ValueError:  # e.g. more digits than Python converts: leave it as text for the schema
        return text


def _short(tag: str) -> str:
    return "!!" + tag[len(CORE) :] if tag.startswith(CORE) else tag


def _tag_message(tag: str) -> str:
    return (
        f"tag {_short(tag)} is not allowed: a recipe holds plain YAML values (text, numbers, true/false, "
        "null, lists and mappings); remove the tag"
    )
