"""answers: pass 2, the creator's answer to every kept question, from the transcript.

The questions of one transcript chunk go out together, numbered, with the chunk's text; the
answers come back matched by number (`answers.questions_per_call` splits a chunk's questions
over several calls). Numbers the model skipped are asked again in follow-up calls, one question
per call (up to `reask` rounds); a question still unanswered is a failed row with its reason.
Each row keeps the model and a digest of the prompts that produced it.

Rows of `type: dataset` sources are appended as they are (model and prompt digest null): the
answers table is the one place where generated and existing pairs meet, so curate, augment and
split see one table and treat both alike.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from engine.data.quality import repeats_question
from engine.llm.client import LLMRequest, LLMResult, client_for
from engine.llm.json_reply import parse, prose_error
from engine.pipeline.hashing import digest
from engine.recipe.section import Section
from engine.recipe.shared import LLMParams
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "answers"
VERSION = 4  # 4: rows of dataset sources appended
DEPENDS = ("questions", "transcripts", "sources")
COLUMNS = {
    "id": "VARCHAR",
    "video_id": "VARCHAR",
    "title": "VARCHAR",
    "question": "VARCHAR",
    "answer": "VARCHAR",
    "tags": "VARCHAR[]",
    "model": "VARCHAR",
    "prompt_digest": "VARCHAR",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "id": "The question's id (questions.id).",
    "video_id": "The video the answer comes from.",
    "title": "The video's title.",
    "question": "The question answered.",
    "answer": "The creator's answer the LLM wrote from the transcript (pass 2); NULL when it failed.",
    "tags": "The question's topic tags.",
    "model": "The LLM that wrote it (llm.model or llm.passes.answers.model).",
    "prompt_digest": "sha256 prefix of the prompts used.",
}

SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["number", "answer"],
        "properties": {"number": {"type": "integer", "minimum": 1}, "answer": {"type": "string", "minLength": 1}},
    },
}


SECTION = "answers"  # with the prompts and `llm.passes.answers`
LLM_PASSES = ("answers",)
RETRY_FAILED_ROWS = True  # --retry-failed reruns it: finished calls come from the LLM cache


class AnswersSettings(Section):
    """Pass 2: the creator's answers to the kept questions."""

    questions_per_call: int | None = Field(
        None,
        ge=1,
        description=(
            "Questions of one transcript chunk asked together in one call. Unset: all of them, "
            "the fewest tokens with an API model. 1 (or a few) suits a local model (`mlx:`): the "
            "calls of a chunk share the transcript's prefill through the prefix cache, and many "
            "short replies in one batch finish in far fewer decoding steps than one long "
            "numbered list."
        ),
    )


Settings = AnswersSettings


@dataclass(frozen=True)
class Config:
    creator: str
    prompts: Mapping[str, str]  # system, answers
    llm: LLMParams
    answers: AnswersSettings


def config(recipe: Recipe) -> Config:
    prompts = {k: getattr(recipe.prompts, k) for k in ("system", "answers")}
    return Config(recipe.creator.name, prompts, recipe.llm.for_pass("answers"), recipe.answers)


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    texts = {(c["video_id"], c["chunk"]): c for c in inputs["transcripts"].ok_rows()}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for q in inputs["questions"].ok_rows():
        groups[(q["video_id"], q["chunk"])].append(q)
    answers: dict[str, str] = {}
    reasons: dict[str, str] = {}
    if groups:  # a recipe of dataset sources only asks nothing (and loads no model)
        _ask(ctx, cfg, groups, texts, answers, reasons)
    rows = [_row(cfg, q, answers, reasons, (q["video_id"], q["chunk"]) in texts) for qs in groups.values() for q in qs]
    _summarise(ctx, rows, len(groups))
    return rows + dataset_rows(ctx, inputs["sources"])


def _ask(ctx: StepContext, cfg: Config, groups: dict, texts: dict, answers: dict, reasons: dict) -> None:
    """Every round of asking: fills `answers` (and `reasons` for what is still missing)."""
    client = client_for(ctx, cfg.llm)
    total = sum(len(v) for v in groups.values())
    with ctx.progress(total, "answering") as bar:
        for round_ in range(cfg.llm.reask + 1):
            units = _units(groups, texts, answers, round_, cfg.answers.questions_per_call)
            if not units:
                break
            if round_:
                ctx.metrics["followups"] = ctx.metrics.get("followups", 0) + len(units)
            requests = [
                _request(cfg, texts[key], qs, f"{key[0]}#{key[1]}#r{round_}#{i}") for i, (key, qs) in enumerate(units)
            ]
            for (_, qs), result in zip(units, client.run_many(requests), strict=True):
                got = _match(qs, result, reasons)
                answers.update(got)
                bar.advance(len(got))


def dataset_rows(ctx: Any, sources: Any) -> list[dict]:
    """The kept rows of dataset sources, in this table's columns (their drops stay in sources)."""
    rows = [
        {
            "id": r["id"],
            "video_id": r["video_id"],
            "title": r["title"],
            "question": r["question"],
            "answer": r["answer"],
            "tags": list(r["tags"] or []),
            "model": None,  # written by a person or another pipeline, not by this recipe's LLM
            "prompt_digest": None,
            "status": "ok",
            "reason": None,
        }
        for r in sources.ok_rows()
        if r["source"] == "dataset"
    ]
    if rows:
        ctx.metrics["from_datasets"] = len(rows)
        ctx.log.info("answers: %d rows from dataset sources added as they are", len(rows))
    return rows


def _units(
    groups: dict, texts: dict, answers: dict, round_: int, per_call: int | None = None
) -> list[tuple[tuple, list[dict]]]:
    """What one round asks: every group at first (whole, or `per_call` questions at a time),
    then each missing question alone.

    A model that skipped or garbled numbers in a list does better with a single question,
    and a single question's reply can be taken as prose when it is not JSON.
    """
    units: list[tuple[tuple, list[dict]]] = []
    for key, qs in groups.items():
        missing = [q for q in qs if q["id"] not in answers]
        if not missing or key not in texts:
            continue
        size = (per_call or len(missing)) if round_ == 0 else 1
        units.extend((key, missing[i : i + size]) for i in range(0, len(missing), size))
    return units


def _request(cfg: Config, chunk: dict, questions: list[dict], request_id: str) -> LLMRequest:
    messages = _messages(cfg, chunk, questions)
    if len(questions) > 1:
        return LLMRequest(request_id, messages, SCHEMA)
    # one question: free text (JSON if it is JSON, else the prose itself), read right away so
    # that a reply which is no answer is re-asked and never cached as a valid one
    question = questions[0]["question"]
    return LLMRequest(request_id, messages, None, read=lambda text: read_single_answer(text, question))


def numbered(questions: list[dict]) -> str:
    return "\n".join(f"{i}. {q['question']}" for i, q in enumerate(questions, start=1))


def _messages(cfg: Config, chunk: dict, questions: list[dict]) -> list[dict]:
    user = cfg.prompts["answers"].format(
        creator=cfg.creator,
        title=chunk["title"] or chunk["video_id"],
        transcript=chunk["text"],
        questions=numbered(questions),
    )
    return [
        {"role": "system", "content": cfg.prompts["system"].format(creator=cfg.creator)},
        {"role": "user", "content": user},
    ]


def _match(questions: list[dict], result: LLMResult, reasons: dict[str, str]) -> dict[str, str]:
    """Answers of this call by question id; a miss records why for the final row."""
    if not result.ok:
        for q in questions:
            reasons[q["id"]] = result.reason or "the call failed"
        return {}
    by_number: dict[int, str] = {}
    for item in result.value:
        if item["number"] not in by_number:
            by_number[item["number"]] = str(item["answer"]).strip()
    got = {}
    for i, q in enumerate(questions, start=1):
        if i not in by_number:
            reasons[q["id"]] = f"no answer numbered {i} in the reply"
        elif why := answer_error(by_number[i], q["question"], f"answer {i}"):
            reasons[q["id"]] = why
        else:
            got[q["id"]] = by_number[i]
    return got


def answer_error(answer: str, question: str, what: str = "the reply") -> str | None:
    """Why one answer text is unusable (not prose, or the question again), or None."""
    if repeats_question(question, answer):
        return f"{what} only repeats the question"
    return prose_error(answer, what)


def read_single_answer(text: str, question: str) -> tuple[list[dict] | None, str | None]:
    """The reply to one question: its JSON when it has an "answer" field, else the prose whole.

    Prose is never split as a list: an answer with bullet points or rhetorical questions is
    still one answer. Either way the answer must be prose and more than the question again.
    """
    stripped = text.strip()
    if '"answer"' in text or stripped[:1] in ("{", "[", "`"):
        value, error = parse(text, SCHEMA)
        if error is not None:
            return None, error
        answer = str(value[0]["answer"]).strip()
    else:  # minus a leading "1." or "Answer:"
        answer = re.sub(r"^(?:1\s*[.)]|A(?:nswer)?\s*1?\s*:)\s*", "", stripped).strip()
    error = answer_error(answer, question)
    return (None, error) if error else ([{"number": 1, "answer": answer}], None)


def _row(cfg: Config, q: dict, answers: dict, reasons: dict, has_text: bool) -> dict:
    answer = answers.get(q["id"])
    if answer is not None:
        status, reason = "ok", None
    elif not has_text:
        status, reason = "failed", "transcript chunk not available"
    else:
        status, reason = "failed", f"unanswered after follow-ups: {reasons.get(q['id'], 'unknown')}"
    return {
        "id": q["id"],
        "video_id": q["video_id"],
        "title": q["title"],
        "question": q["question"],
        "answer": answer,
        "tags": list(q["tags"] or []),
        "model": cfg.llm.model,
        "prompt_digest": digest(cfg.prompts)[:16],
        "status": status,
        "reason": reason,
    }


def _summarise(ctx: Any, rows: list[dict], groups: int) -> None:
    status = Counter(r["status"] for r in rows)
    ctx.metrics.update(groups=groups, answered=status["ok"], failed=status["failed"])
    ctx.log.info("answers: %d answered, %d failed across %d transcript chunks", status["ok"], status["failed"], groups)
