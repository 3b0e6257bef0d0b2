"""Evaluation prompts: one declaration of an eval item, and a loader for JSON / JSONL prompt sets.

A recipe's `eval.questions` (and the file `eval.questions_file` names) holds strings or objects
`{prompt, expected?, max_tokens?, kind: voice | probe, must_include?}`; a string is a voice prompt.
Voice prompts are asked in the creator's voice and scored against the training data; probes are
general-ability checks that pass when every `must_include` entry is in the answer.

A prompt file's problems come back as `Problem`s at the file's own line and column, so `recipe
validate` prints them like the recipe's (file:line:col: message) and exits 1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from engine.errors import Problem, TextProblem
from engine.recipe.section import Section

MAX_FILE_BYTES = 20_000_000  # a real set is a few KB (38 prompts); a runaway export is not a prompt set
FORMATS = {".json": "json", ".jsonl": "jsonl"}
Word = Annotated[str, Field(min_length=1)]


class EvalQuestion(Section):
    """One evaluation prompt."""

    prompt: Word = Field(description="What both models are asked.")
    expected: str | None = Field(None, description="A reference answer: the report's reference column.")
    max_tokens: int | None = Field(
        None, ge=1, description="Most tokens of this prompt's answers (default: `eval.max_tokens`)."
    )
    kind: Literal["voice", "probe"] = Field(
        "voice",
        description="`voice`: answered in the creator's voice and scored against the training data; "
        "`probe`: a general-ability check against forgetting, passed when the answer has every "
        "`must_include` entry.",
    )
    must_include: tuple[Word | tuple[Word, ...], ...] = Field(
        (),
        description="Probe only: words or phrases the answer must all contain (case-insensitive, whole "
        "words); an entry that is a list passes when any one of its words is there "
        '(`[["12", "twelve"]]`).',
    )


def rule_problem(question: EvalQuestion) -> str | None:
    """What the schema cannot say about one item (checked by the evaluate step's check())."""
    if question.kind == "voice" and question.must_include:
        return "must_include is for probes: add `kind: probe`, or drop must_include"
    return None


# The item type of `eval.questions` and of a prompt file: a plain string is a voice prompt.
QuestionItem = Word | EvalQuestion

GREETING_WORDS = ("hello", "hi", "hey", "greetings", "welcome", "help", "nice to meet", "how can i", "what can i")
# General-ability probes asked when a recipe declares none: if the tuned model fails what the base
# model passes, it forgot. 128 tokens: each needs a sentence, and a loop shows well before that.
DEFAULT_PROBES: tuple[EvalQuestion, ...] = (
    EvalQuestion(
        prompt="Hello",
        kind="probe",
        max_tokens=128,
        # A sane reply greets back or offers help; a lecture on the training topic does neither.
        must_include=(GREETING_WORDS,),
    ),
    EvalQuestion(
        prompt="What is 7 + 5? Reply with the number only.",
        kind="probe",
        max_tokens=128,
        must_include=(("12", "twelve"),),
    ),
    EvalQuestion(prompt="What is the capital of France?", kind="probe", max_tokens=128, must_include=("paris",)),
)


def as_question(item: str | EvalQuestion) -> EvalQuestion:
    return EvalQuestion(prompt=item) if isinstance(item, str) else item


def missing_words(question: EvalQuestion, answer: str) -> list[str]:
    """The `must_include` entries the answer lacks (an alternatives entry shown as `a|b`)."""
    missing = []
    for entry in question.must_include:
        options = (entry,) if isinstance(entry, str) else entry
        if not any(_contains(answer, word) for word in options):
            missing.append("|".join(options))
    return missing


def _contains(text: str, word: str) -> bool:
    """Case-insensitive, as a whole word where the entry starts/ends with a word character:
    "12" is not in "120", "hi" is not in "this"; spacing inside a phrase may vary."""
    body = r"\s+".join(re.escape(part) for part in word.split())
    start = r"(?<!\w)" if re.match(r"\w", word) else ""
    end = r"(?!\w)" if re.search(r"\w$", word) else ""
    return re.search(start + body + end, text, re.IGNORECASE) is not None


# -- prompt files ---------------------------------------------------------------------------------


def load_questions_file(path: Path) -> tuple[tuple[EvalQuestion, ...], list[Problem]]:
    """(questions, problems) of a .json (a list) or .jsonl (one item a line) prompt file."""
    shown = str(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        return (), [Problem(shown, 1, 1, None, "a prompt file is .json (a list of prompts) or .jsonl (one a line)")]
    try:
        text = _read(path)
    except OSError as e:
        return (), [Problem(shown, 1, 1, None, f"cannot read the prompt file ({e.strerror or e})")]
    except TextProblem as e:
        return (), [Problem(shown, e.line, e.col, None, e.message)]
    entries, problems = _jsonl_entries(text, shown) if kind == "jsonl" else _json_entries(text, shown)
    questions = []
    for value, (line, col) in entries:
        parsed = parse_item(value)
        if isinstance(parsed, str):
            problems.append(Problem(shown, line, col, None, parsed))
        else:
            questions.append(parsed)
    problems.sort(key=lambda p: (p.line, p.col))
    if not questions and not problems:
        problems.append(Problem(shown, 1, 1, None, "no prompts in the file; add some or remove eval.questions_file"))
    return tuple(questions), problems


def _read(path: Path) -> str:
    from engine.recipe.file_text import decode

    if path.stat().st_size > MAX_FILE_BYTES:
        raise TextProblem(1, 1, f"the file is over {MAX_FILE_BYTES:,} bytes; an evaluation set is a few KB")
    return decode(path.read_bytes())


Entries = list[tuple[Any, tuple[int, int]]]


def _jsonl_entries(text: str, shown: str) -> tuple[Entries, list[Problem]]:
    """Every line's value; every line that is not JSON is a problem (all of them, not the first)."""
    entries: Entries = []
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # blank lines (a trailing newline, a gap between groups) are no prompts
        try:
            entries.append((json.loads(line), (number, len(line) - len(line.lstrip()) + 1)))
        except json.JSONDecodeError as e:
            problems.append(Problem(shown, number, e.colno, None, f"not a JSON value ({e.msg}); {_ONE_A_LINE}"))
    return entries, problems


_ONE_A_LINE = 'each line is one prompt: a "string" or an object {"prompt": ..., "kind": "voice" or "probe", ...}'


def _json_entries(text: str, shown: str) -> tuple[Entries, list[Problem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return [], [Problem(shown, e.lineno, e.colno, None, f"not valid JSON ({e.msg})")]
    if not isinstance(data, list):
        message = "a .json prompt file is a list of prompts ([...]); for one a line use .jsonl"
        return [], [Problem(shown, 1, 1, None, message)]
    positions = _item_positions(text, shown)
    return [(value, positions.get((i,), (1, 1))) for i, value in enumerate(data)], []


def _item_positions(text: str, shown: str) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Where each list item starts (JSON is YAML, and the recipe reader records positions)."""
    from engine.errors import RecipeInvalid
    from engine.recipe.yaml_reader import parse_text

    try:
        return parse_text(text, shown)[1]
    except RecipeInvalid:
        return {}  # valid JSON the YAML reader refuses (very deep, huge): items are still checked


def parse_item(value: Any) -> EvalQuestion | str:
    """An item as an EvalQuestion, or a message saying what is wrong with it."""
    if isinstance(value, str):
        return EvalQuestion(prompt=value) if value.strip() else "an empty prompt"
    if not isinstance(value, dict):
        return f"{_shown(value)} is not a prompt: write a string or an object with a 'prompt'"
    try:
        question = EvalQuestion.model_validate(value)
    except ValidationError as e:
        return "; ".join(_message(err) for err in e.errors())
    return rule_problem(question) or question


def _message(err: Any) -> str:
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(EvalQuestion.model_fields)
        return f"unknown field '{where}' (allowed: {allowed})"
    if err["type"] == "missing":
        return f"missing required field '{where}'"
    text = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {text}" if where else text


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:55] + "..."
