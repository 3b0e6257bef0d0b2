"""The recipe's JSON Schema, generated from the Section classes (the only declaration).

pydantic writes the schema; three rewrites make it read like a hand-written one and keep
validation errors short: no auto-generated titles, `X | None` as `"type": [X, "null"]`, and
tagged unions (`type: local | youtube`) as if/then branches, so a typo inside a local source
is reported against the local fields instead of "matches none of the alternatives".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://recipe.local/schemas/recipe.schema.json"


def generate_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a recipe model, in the committed, editor-friendly shape."""
    raw = model.model_json_schema(mode="validation")
    body = _tidy(raw)
    definitions = body.pop("$defs", {})  # last, so the file reads top-down: the recipe, then its parts
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, "title": "recipe", **body, "$defs": definitions}


def _tidy(node: Any) -> Any:
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in ("properties", "$defs"):  # names, not keywords: keep every entry
            out[key] = {name: _tidy(sub) for name, sub in value.items()}
        else:
            out[key] = _tidy(value)
    return _tagged_union(_nullable(out))


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """{"anyOf": [{"type": T, ...}, {"type": "null"}]} -> {"type": [T, "null"], ...}."""
    branches = node.get("anyOf")
    if not isinstance(branches, list) or len(branches) != 2 or {"type": "null"} not in branches:
        return node
    other = next(b for b in branches if b != {"type": "null"})
    if not isinstance(other.get("type"), str) or set(other) & set(node) - {"anyOf"}:
        return node  # a $ref or a union of several types: leave it as anyOf
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    merged.update(other)
    merged["type"] = [other["type"], "null"]
    return merged


def _tagged_union(node: dict[str, Any]) -> dict[str, Any]:
    """oneOf + discriminator -> one object with the tag's enum and an if/then branch per tag."""
    discriminator = node.get("discriminator")
    if not isinstance(discriminator, dict) or "oneOf" not in node:
        return node
    tag, mapping = discriminator["propertyName"], discriminator["mapping"]
    rest = {k: v for k, v in node.items() if k not in ("oneOf", "discriminator")}
    return {
        "type": "object",
        **rest,
        "required": [tag],
        "properties": {tag: {"enum": list(mapping), "description": f"Kind: {', '.join(mapping)}."}},
        "allOf": [
            {"if": {"properties": {tag: {"const": value}}}, "then": {"$ref": ref}} for value, ref in mapping.items()
        ],
    }
