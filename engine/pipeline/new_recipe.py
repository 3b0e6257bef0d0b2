"""`recipe new NAME --channel URL [--from RECIPE]`: start a recipe for another creator.

The source recipe is copied with a ruamel round trip (its comments, order and block strings
survive), the creator, name and sources are replaced, the old creator's name is replaced
wherever it appears in a value, and every field a human should review gets a `# CHECK:` comment.
The result is validated before it is written.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import RecipeError

DEFAULT_FROM = ("recipes/jason_fung.yaml", "recipes/demo.yaml")
PROJECT_SCHEMA = Path("schemas/recipe.schema.json")  # `recipe schema --write`'s default, from the project root
BESIDE_SCHEMA = "recipe.schema.json"  # written next to the new recipe when there is none to point at
SCHEMA_LINE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(\S+)", re.M)
# Shipped in the package (a link to recipes/jason_fung.yaml in the repository): the start when the
# working directory has no recipes/, as after `pip install recipe`.
PACKAGED_FROM = Path(__file__).parent / "starters" / "jason_fung.yaml"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HANDLE = re.compile(r"youtube\.com/(@[\w.-]+)|^(@[\w.-]+)$")

# Fields whose content is specific to a creator or a domain: (path, why).
REVIEW = (
    (("description",), "describe the new recipe"),
    (("creator", "name"), "the name prompts use for {creator}"),
    (("creator", "language"), "language of the new channel"),
    (("sources",), "add filters (min_duration, title_exclude, ...) for this channel"),
    (("prompts", "system"), "domain and voice of the new creator"),
    (("prompts", "questions"), "example questions and tags are domain-specific"),
    (("prompts", "answers"), "formatting rules and voice"),
    (("split", "system_prompt"), "system prompt of the training data"),
    (("filters", "banned_phrases"), "phrases the new creator's answers must not contain"),
    (("filters", "formatting"), "does the new creator's style use these formats?"),
    (("eval", "questions"), "questions about the new creator's topics"),
)


@dataclass
class NewRecipe:
    path: Path
    checks: list[str] = field(default_factory=list)
    schema_written: Path | None = None  # a schema file written beside it for editors


def handle_from_url(url: str) -> str | None:
    m = HANDLE.search(url.strip())
    return (m.group(1) or m.group(2)) if m else None


def channel_url(channel: str) -> str:
    """`@handle` -> the channel's URL (the youtube source wants a URL)."""
    channel = channel.strip()
    return f"https://www.youtube.com/{channel}" if channel.startswith("@") else channel


def guess_creator(url: str) -> str:
    """A placeholder creator name from the channel handle (flagged CHECK: a human fixes it)."""
    handle = handle_from_url(url)
    return handle.lstrip("@") if handle else url.rstrip("/").rsplit("/", 1)[-1] or "Creator"


def default_from() -> Path:
    for candidate in DEFAULT_FROM:
        if Path(candidate).is_file():
            return Path(candidate)
    if PACKAGED_FROM.is_file():
        return PACKAGED_FROM
    raise RecipeError("no recipe to start from; pass --from RECIPE")


def new_recipe(
    name: str,
    channel: str,
    source: Path | None = None,
    creator: str | None = None,
    out_dir: Path = Path("recipes"),
    force: bool = False,
) -> NewRecipe:
    """Write out_dir/<name>.yaml from `source` for the channel; returns the path and what to check."""
    if not NAME_PATTERN.match(name):
        raise RecipeError(f"recipe name '{name}' must be letters, digits, '_', '.', '-' (e.g. jane_doe)")
    channel = channel_url(channel)
    source = source or default_from()
    if not source.is_file():
        raise RecipeError(f"{source}: no such recipe to start from")
    out = out_dir / f"{name}.yaml"
    if out.exists() and not force:
        raise RecipeError(f"{out} exists; pick another name or pass --force")
    yaml = _yaml()
    source_text = source.read_text(encoding="utf-8")
    data = yaml.load(source_text)
    checks = rewrite(data, name, channel, creator or guess_creator(channel))
    reference, beside = schema_reference(source, source_text, out_dir)
    text = _header(source, channel, reference) + _strip_leading_comments(_dump(yaml, data))
    _write_validated(out, text)
    return NewRecipe(out, checks, _write_schema(beside) if beside else None)


def schema_reference(source: Path, source_text: str, out_dir: Path) -> tuple[str, Path | None]:
    """The `$schema=` value for a recipe written into `out_dir`, resolving from there, and the
    schema file to write for it (None: an existing one is pointed at).

    The copied line is relative to the source recipe, so it is re-aimed: at the schema the
    source's own line names when that file exists (a URL is kept as it is), else at the
    project's schemas/ (the current folder's). Without either (recipe installed with pip, run
    outside the repository) the schema of this version is written beside the new recipe: a path
    into site-packages would break with the environment, a file next to the recipe travels with it.
    """
    named = SCHEMA_LINE.search(source_text)
    if named and "://" in named.group(1):  # a URL resolves from anywhere
        return named.group(1), None
    for schema in (source.parent / named.group(1) if named else None, PROJECT_SCHEMA):
        if schema is not None and schema.is_file():
            relative = _relative(schema, out_dir)
            if relative:
                return relative, None
    return f"./{BESIDE_SCHEMA}", out_dir / BESIDE_SCHEMA


def _relative(target: Path, out_dir: Path) -> str | None:
    """`target` as a path from `out_dir` with forward slashes. None where there is none (another
    drive) or it holds white space, which ends a modeline's value for some editors."""
    try:
        relative = Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()
    except ValueError:
        return None
    if any(c.isspace() for c in relative):
        return None
    return relative if relative.startswith("../") else f"./{relative}"


def _write_schema(path: Path) -> Path:
    from engine.pipeline.recipes import schema_text

    path.parent.mkdir(parents=True, exist_ok=True)
    text = schema_text()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def rewrite(data: Any, name: str, channel: str, creator: str) -> list[str]:
    """Replace name/creator/sources in place; add CHECK comments; return the checked paths."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    old_creator = (data.get("creator") or {}).get("name")
    old_handle = (data.get("creator") or {}).get("handle")
    data["name"] = name
    data.setdefault("creator", CommentedMap())
    data["creator"]["name"] = creator
    data["creator"]["handle"] = handle_from_url(channel)
    data["sources"] = CommentedSeq([CommentedMap([("type", "youtube"), ("url", channel)])])
    replaced = _replace_strings(data, {old_creator: creator, old_handle: handle_from_url(channel)}, ())
    checks = [(path, why) for path, why in REVIEW if _get(data, path) is not None]
    checks += [(path, "was about the previous creator") for path in replaced if all(path != p for p, _ in checks)]
    for path, why in checks:
        _comment(data, path, why)
    return [".".join(map(str, p)) for p, _ in checks]


def _replace_strings(node: Any, mapping: dict[Any, str | None], path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Replace old creator name/handle inside string values (keeping ruamel's string styles)."""
    pairs = [(old, new) for old, new in mapping.items() if old and new]
    hits: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in list(items):
        if isinstance(value, str) and path[:1] not in (("creator",), ("sources",)):
            new = value
            for old, repl in pairs:
                new = new.replace(old, repl)
            if new != value:
                node[key] = type(value)(new) if type(value) is not str else new
                hits.append(path + (key,))
        elif isinstance(value, (dict, list)):
            hits += _replace_strings(value, mapping, path + (key,))
    # Comments go on mapping keys, so report the nearest mapping key of a list item.
    return [tuple(p for p in hit if not isinstance(p, int)) for hit in hits]


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _comment(data: Any, path: tuple[Any, ...], why: str) -> None:
    parent = _get(data, path[:-1]) if len(path) > 1 else data
    parent.yaml_set_comment_before_after_key(path[-1], before=f"CHECK: {why}", indent=2 * (len(path) - 1))


def _dump(yaml: Any, data: Any) -> str:
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def _strip_leading_comments(text: str) -> str:
    """The copied file's header describes the old creator: drop it (we write our own)."""
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("#") and "CHECK:" not in lines[0] or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines)


def _header(source: Path, channel: str, schema: str) -> str:
    return (
        f"# yaml-language-server: $schema={schema}\n#\n"
        f"# Made by `recipe new` from {source} for {channel}.\n"
        "# Review every field marked CHECK, then: recipe validate <this file>\n"
    )


def _write_validated(out: Path, text: str) -> None:
    """Validate a temporary copy beside the target (relative paths resolve the same), then rename."""
    from engine.pipeline.recipes import load_recipe

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.yaml")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_recipe(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
