"""Cross-field rules the JSON Schema cannot express. Each returns a list of Problems."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Callable

from engine.errors import Problem
from engine.recipe.paths import local_transcript_files

# Placeholders each prompt may use, and those it must use.
PROMPT_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "system": ({"creator"}, set()),
    "questions": ({"creator", "title", "transcript", "min_questions", "max_questions"}, {"transcript"}),
    "answers": ({"creator", "title", "transcript", "questions"}, {"transcript", "questions"}),
    "standalone": ({"question", "creator"}, {"question"}),
    "paraphrase": ({"question", "n", "creator"}, {"question"}),
    "short": ({"creator", "question", "answer"}, {"answer"}),
    "long": ({"creator", "question", "answer"}, {"answer"}),
    "translate": ({"language", "text"}, {"language", "text"}),
    "score": ({"question", "answer", "creator"}, {"answer"}),
    "judge": ({"creator", "question", "a", "b"}, {"a", "b"}),
}


def placeholders(template: str) -> set[str]:
    """Names used in a str.format template; raises ValueError on unbalanced braces."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.add(name.split(".")[0].split("[")[0])
    return names


def check_prompts(located, resolved: dict, base_dir: Path) -> list[Problem]:
    problems = []
    for name, template in resolved["prompts"].items():
        allowed, required = PROMPT_FIELDS[name]
        path = ("prompts", name)
        try:
            used = placeholders(template)
        except ValueError as e:
            problems.append(located.problem(path, f"bad template ({e}); write {{{{ and }}}} for literal braces"))
            continue
        for unknown in sorted(used - allowed):
            problems.append(located.problem(
                path, f"unknown placeholder {{{unknown}}}; allowed: {', '.join('{' + a + '}' for a in sorted(allowed))}"))
        for missing in sorted(required - used):
            problems.append(located.problem(path, f"must contain the placeholder {{{missing}}}"))
    return problems


def check_system_prompt(located, resolved: dict, base_dir: Path) -> list[Problem]:
    template = resolved["split"].get("system_prompt")
    if template is None:
        return []
    try:
        unknown = placeholders(template) - {"creator"}
    except ValueError as e:
        return [located.problem(("split", "system_prompt"), f"bad template ({e})")]
    return [located.problem(("split", "system_prompt"), f"unknown placeholder {{{u}}}; allowed: {{creator}}")
            for u in sorted(unknown)]


def check_split(located, resolved: dict, base_dir: Path) -> list[Problem]:
    split = resolved["split"]
    total = split["valid"] + split["test"]
    if total >= 1:
        where = ("split", "test") if ("split", "test") in located.positions else ("split", "valid")
        return [located.problem(where, f"valid + test = {total:g} leaves nothing to train on; keep the sum below 1 (e.g. valid: 0.1, test: 0.1)")]
    return []


def check_question_counts(located, resolved: dict, base_dir: Path) -> list[Problem]:
    q = resolved["questions"]
    if q["min_per_video"] > q["max_per_video"]:
        return [located.problem(("questions", "min_per_video"),
                                f"{q['min_per_video']} is more than max_per_video ({q['max_per_video']})")]
    return []


def check_sources(located, resolved: dict, base_dir: Path) -> list[Problem]:
    problems = []
    for i, source in enumerate(resolved["sources"]):
        if source["type"] == "local" and not local_transcript_files(base_dir, source["path"]):
            shown = Path(source["path"]) if Path(source["path"]).is_absolute() else base_dir / source["path"]
            problems.append(located.problem(
                ("sources", i, "path"),
                f"no transcript files at {shown} (.txt .md .vtt .srt .json .json3); check the path, "
                "which is relative to the recipe file"))
        if source["type"] == "youtube":
            problems.extend(_youtube_problems(located, source, i))
    return problems


def _youtube_problems(located, source: dict, i: int) -> list[Problem]:
    problems = []
    if not source.get("url") and not source.get("videos"):
        problems.append(located.problem(("sources", i), "a youtube source needs `url` or `videos`"))
    for field in ("title_include", "title_exclude"):
        for j, pattern in enumerate(source.get(field, [])):
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(located.problem(("sources", i, field, j), f"bad regex {pattern!r}: {e}"))
    lo, hi = source.get("min_duration"), source.get("max_duration")
    if lo is not None and hi is not None and lo > hi:
        problems.append(located.problem(("sources", i, "min_duration"), f"{lo} is more than max_duration ({hi})"))
    return problems


def check_train_budget(located, resolved: dict, base_dir: Path) -> list[Problem]:
    train = resolved["train"]
    if train.get("iters") is None and train.get("epochs") is None:
        return [located.problem(("train", "iters"), "set `iters` or `epochs` (both are null)")]
    if train["lr_schedule"]["name"] == "cosine" and train.get("iters") and train["lr_schedule"]["warmup"] >= train["iters"]:
        return [located.problem(("train", "lr_schedule", "warmup"),
                                f"warmup ({train['lr_schedule']['warmup']}) must be below iters ({train['iters']})")]
    return []


ALL_CHECKS: tuple[Callable[..., list[Problem]], ...] = (
    check_prompts, check_system_prompt, check_split, check_question_counts, check_sources,
    check_train_budget,
)
