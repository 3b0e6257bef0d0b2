"""Structured output: turn a model's reply into the JSON value a pass declared, or say why not.

Accepted, in order of trust: a bare JSON value; JSON inside ``` fences or surrounded by prose;
an object wrapping the expected list ({"questions": [...]}). Small local models often break
JSON, so lenient fallbacks apply only when the schema expects a list: items salvaged from
truncated/broken JSON by their field names (for lists of questions also any quoted string
ending in "?"), then a numbered or bulleted plain-text list (or, with no list markers and
no answers expected, the sentences that end in "?"). Every fallback result is still validated against the schema, so
leniency never lets bad shapes in; the questions step then filters what is not a question.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_MARKER = re.compile(r"^\s*(?:(?:Q(?:uestion)?\s*)?(\d{1,3})\s*[.):\]-]|[-*•])\s+(.*\S)\s*$")
_FRAGMENT = re.compile(r"\{[^{}]*")
_QUESTION_SENTENCE = re.compile(r"[A-Z][^.?!\n\"]{6,}\?")
_QUOTED_QUESTION = re.compile(r'"((?:[^"\\\n]|\\.){8,}\?)"')
# a JSON list ("[1", "[\"", "[[", "[]"), a code fence or an HTML/XML tag opening a reply
# Openings of a JSON value, a fenced block or an HTML page/tag: structure, not an answer.
_STRUCTURE_START = re.compile(r"\{\s*\"|\[\s*[\[\]\"\d{-]|```|<[A-Za-z/!?]")


def validation_error(value: Any, schema: dict) -> str | None:
    """The most relevant schema violation as one line, or None if the value conforms."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{'at ' + where + ': ' if where else ''}{error.message}"[:400]


def parse(text: str, schema: dict) -> tuple[Any, str | None]:
    """(value, None) when the reply yields a conforming value, else (None, error message)."""
    first_error = None
    for candidate in _json_candidates(text):
        error = None
        for value in _unwrapped(candidate, schema):
            error = validation_error(value, schema)
            if error is None:
                return value, None
        # the innermost (unwrapped) value's error is the one worth quoting back to the model
        first_error = first_error or error
    if _expects_list(schema):
        for value in (_salvage_items(text, schema), _plain_list(text, schema)):
            if value and validation_error(value, schema) is None:
                return value, None
    if first_error is None:
        first_error = "the reply contains no parsable JSON"
    return None, first_error


def followup_message(error: str, prose: bool = False) -> dict:
    """The user turn that re-asks after an invalid reply, quoting the validation error."""
    again = "only your answer, as plain text" if prose else "only the corrected JSON, no other text"
    return {"role": "user", "content": f"Your reply could not be used: {error}\nReply again with {again}."}


# -- free text ------------------------------------------------------------------------------
def prose_error(text: str, what: str = "the reply") -> str | None:
    """Why `text` is not usable where prose is expected (an answer, a paraphrase), or None.

    The rule is about form, not content: prose has words, and it is not data or markup the
    model was not asked for. A reply that is JSON, opens like a JSON value or an HTML page, or
    leaves braces/brackets unbalanced (broken JSON such as `not json {{{ [`) is rejected.
    Balanced braces stay allowed: a creator who teaches programming writes `{}` in code.
    Whether well-formed prose is a good answer is curate's question.
    """
    stripped = text.strip()
    if not stripped:
        return f"{what} is empty"
    if not any(ch.isalpha() for ch in stripped):
        return f"{what} has no words"
    if _STRUCTURE_START.match(stripped) or _is_json(stripped):
        return f"{what} is JSON, code or markup, not prose"
    if stripped.count("{") != stripped.count("}") or stripped.count("[") != stripped.count("]"):
        return f"{what} has unbalanced braces or brackets (broken JSON?), not prose"
    return None


def _is_json(text: str) -> bool:
    """A reply that parses whole as a JSON object or list (a bare word or number is prose)."""
    if text[0] not in "[{":
        return False
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


def read_prose(text: str) -> tuple[str | None, str | None]:
    """(the stripped text, None) when it is usable prose, else (None, why not)."""
    error = prose_error(text)
    return (None, error) if error else (text.strip(), None)


# -- JSON extraction ------------------------------------------------------------------------
def _json_candidates(text: str) -> list[Any]:
    """Every JSON value found: the whole text, fenced blocks, the first value inside prose."""
    found: list[Any] = []
    sources = [text] + _FENCE.findall(text)
    decoder = json.JSONDecoder()
    for source in sources:
        source = source.strip()
        try:
            found.append(json.loads(source))
            continue
        except ValueError:
            pass
        for start in (i for i, ch in enumerate(source) if ch in "[{"):
            try:
                value, _ = decoder.raw_decode(source, start)
            except ValueError:
                continue
            found.append(value)
            break
    return found


def _unwrapped(value: Any, schema: dict) -> list[Any]:
    """The value itself, plus the list inside a one-list wrapper object when a list is expected."""
    out = [value]
    if _expects_list(schema) and isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            out.append(lists[0])
    return out


def _expects_list(schema: dict) -> bool:
    return schema.get("type") == "array"


# -- lenient fallbacks for lists --------------------------------------------------------------
def _item_fields(schema: dict) -> tuple[str | None, str | None]:
    """(text field, number field) of the list's object items; (None, None) for string items."""
    items = schema.get("items") or {}
    if items.get("type") != "object":
        return None, None
    props = items.get("properties") or {}
    strings = [k for k, v in props.items() if v.get("type") == "string"]
    required = [k for k in items.get("required", []) if k in strings]
    numbers = [k for k, v in props.items() if v.get("type") == "integer"]
    return (required or strings or [None])[0], (numbers or [None])[0]


def _salvage_items(text: str, schema: dict) -> list[Any]:
    """Objects recovered field by field from broken JSON (e.g. cut off at max_tokens).

    Each recovered item must pass the item schema on its own; broken ones are left out.
    """
    text_field, number_field = _item_fields(schema)
    if text_field is None:
        return []
    string_re = re.compile(rf'"{re.escape(text_field)}"\s*:\s*"((?:[^"\\]|\\.)*)"', re.S)
    number_re = re.compile(rf'"{re.escape(number_field)}"\s*:\s*(\d+)') if number_field else None
    item_schema = schema.get("items") or {}
    items: list[dict] = []
    for fragment in _FRAGMENT.findall(text):
        match = string_re.search(fragment)
        if not match:
            continue
        item: dict[str, Any] = {text_field: _unescape(match.group(1))}
        if number_re is not None and number_field is not None:
            number = number_re.search(fragment)
            item[number_field] = int(number.group(1)) if number else len(items) + 1
        if item not in items and validation_error(item, item_schema) is None:
            items.append(item)
    if not items and text_field == "question":
        # small models rename the field ("title", "q"): any quoted string ending in "?" is one
        found = dict.fromkeys(_unescape(m) for m in _QUOTED_QUESTION.findall(text))
        items = [{text_field: q} for q in found]
    return items


def _unescape(literal: str) -> str:
    try:
        return json.loads(f'"{literal}"')
    except ValueError:  # an invalid escape: keep the characters as written
        return literal


def _plain_list(text: str, schema: dict) -> list[Any]:
    """A numbered/bulleted list ("1. ...", "- ..."); continuation lines (and bullets under a
    numbered item) join their item.

    Without any list markers, a list of questions or of plain strings (paraphrases) takes the
    sentences ending in "?"; in a list of answers those would be rhetorical questions, not items.
    """
    entries: list[tuple[int | None, list[str]]] = []
    for line in text.splitlines():
        match = _MARKER.match(line)
        # a bullet inside a numbered list belongs to the numbered item above it
        nested = match and match.group(1) is None and any(n is not None for n, _ in entries)
        if match and not nested:
            entries.append((int(match.group(1)) if match.group(1) else None, [match.group(2)]))
        elif entries and line.strip():
            entries[-1][1].append(line.strip())
    text_field, number_field = _item_fields(schema)
    if not entries and text_field in (None, "question"):
        # prose: every sentence that ends in "?" (a line may hold several)
        entries = [(None, [q]) for q in dict.fromkeys(_QUESTION_SENTENCE.findall(text))]
    items: list[Any] = []
    for index, (number, lines) in enumerate(entries, start=1):
        body = " ".join(lines).strip().strip('"').strip()
        if not body:
            continue
        if text_field is None:
            items.append(body)
            continue
        item: dict[str, Any] = {text_field: body}
        if number_field:
            item[number_field] = number if number is not None else index
        items.append(item)
    return items
