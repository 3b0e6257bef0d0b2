"""Rules the JSON Schema cannot express that read the raw data, so they run even when the schema
fails elsewhere: a recipe with a bad number and a bad prompt hears about both at once.

- prompt templates: only the plain `{name}` placeholders each prompt declares (`x-placeholders`
  in the schema, from engine.recipe.section.prompt_field), with the required ones present;
- credentials in URLs: an `api_base` with `?api_key=...` or `user:password@` would be copied into
  recipe.yaml, resolved.json and report.html; keys belong in the environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from engine.errors import Problem, TemplateError
from engine.recipe.located import Located, PathTuple
from engine.recipe.section import PLACEHOLDERS_KEY, placeholders

DEFAULT_MODEL = "openai/gpt-4o-mini"  # LLMParams.model's default: the provider when none is set
SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session", re.I)
API_KEY_LIKE = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{12,}|\bBearer\b", re.I)
# litellm reads `<PROVIDER>_API_KEY` for most providers; these spell theirs differently.
KEY_VARIABLES = {"together_ai": "TOGETHERAI_API_KEY", "perplexity": "PERPLEXITYAI_API_KEY", "mlx": "OPENAI_API_KEY"}


def raw_problems(located: Located, schema: dict[str, Any]) -> list[Problem]:
    return prompt_problems(located, schema) + credential_problems(located)


# -- prompt templates ----------------------------------------------------------------------------


def prompt_problems(located: Located, schema: dict[str, Any]) -> list[Problem]:
    """Every prompt the recipe sets uses only the placeholders it declares, in the plain form."""
    problems = []
    for path, template, declared in _prompts(schema, schema, located.data, ()):
        try:
            used = placeholders(template)
        except TemplateError as e:
            problems.append(located.problem(path, str(e)))
            continue
        allowed, required = set(declared["allowed"]), set(declared["required"])
        for unknown in sorted(used - allowed):
            shown = ", ".join("{" + a + "}" for a in sorted(allowed))
            problems.append(located.problem(path, f"unknown placeholder {{{unknown}}}; allowed: {shown}"))
        for missing in sorted(required - used):
            problems.append(located.problem(path, f"must contain the placeholder {{{missing}}}"))
    return _unique(problems)


def _prompts(
    root: dict[str, Any], node: Any, value: Any, path: PathTuple
) -> Iterator[tuple[PathTuple, str, dict[str, list[str]]]]:
    """(path, template, declared) of each string in `value` whose schema declares placeholders."""
    node = _resolve(root, node)
    if not isinstance(node, dict):
        return
    if isinstance(node.get(PLACEHOLDERS_KEY), dict) and isinstance(value, str):
        yield path, value, node[PLACEHOLDERS_KEY]
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key in node.get("properties", {}):
                yield from _prompts(root, node["properties"][key], item, path + (key,))
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            yield from _prompts(root, node["items"], item, path + (i,))
    for keyword in ("anyOf", "oneOf", "allOf"):  # unions, nullable sections, tagged sources
        for branch in node.get(keyword, []):
            yield from _prompts(root, branch.get("then", branch), value, path)


def _resolve(root: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/$defs/"):
        node = root.get("$defs", {}).get(node["$ref"].removeprefix("#/$defs/"))
    return node


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))  # a prompt reached through two union branches is one problem


# -- credentials in URLs -------------------------------------------------------------------------


def credential_problems(located: Located) -> list[Problem]:
    """`llm.api_base` and every `llm.passes.<pass>.api_base` must not carry a key or password."""
    llm = located.get(("llm",))
    if not isinstance(llm, dict):
        return []
    model = llm.get("model") if isinstance(llm.get("model"), str) else DEFAULT_MODEL
    places: list[tuple[PathTuple, Any, Any]] = [(("llm", "api_base"), llm.get("api_base"), model)]
    passes = llm.get("passes")
    for name, override in (passes or {}).items() if isinstance(passes, dict) else ():
        if isinstance(override, dict):
            own = override.get("model") if isinstance(override.get("model"), str) else model
            places.append((("llm", "passes", name, "api_base"), override.get("api_base"), own))
    problems = []
    for path, url, pass_model in places:
        found = url_credentials(url) if isinstance(url, str) else None
        if found:
            variable = key_variable(pass_model)
            problems.append(
                located.problem(
                    path,
                    f"the URL holds credentials ({found}), which would be copied into the run folder "
                    f"(recipe.yaml, resolved.json, report.html); remove them from the URL and set {variable} "
                    "in the environment instead (litellm reads the key from there)",
                )
            )
    return problems


def url_credentials(url: str) -> str | None:
    """What kind of secret a URL carries (never its value), or None."""
    try:
        parts = urlsplit(url.strip())
        has_login = bool(parts.username or parts.password)
    except ValueError:  # e.g. a broken IPv6 host: not ours to judge here
        return None
    if has_login:
        return "a user name or password before '@'"
    for piece in (parts.query, parts.fragment):
        for name, _ in parse_qsl(piece, keep_blank_values=True):
            if SECRET_NAME.search(name):
                return f"the parameter '{name}'"
    if API_KEY_LIKE.search(url):
        return "text that looks like an API key"
    return None


def key_variable(model: str) -> str:
    """The environment variable litellm reads the key of `model`'s provider from."""
    provider = model.partition("/")[0].split(":")[0].lower() if "/" in model else "openai"
    return KEY_VARIABLES.get(provider, f"{provider.upper()}_API_KEY")
