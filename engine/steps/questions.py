"""questions: pass 1, the questions each transcript chunk answers (one LLM call per chunk).

The model's list is parsed against a JSON Schema (lenient fallbacks in engine.llm.json_reply), then
a deterministic filter drops questions that name the creator, point at "this video"/"the
transcript", or are not questions at all. Dropped and failed items stay as rows with a reason;
an optional LLM check drops questions that do not stand on their own.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from engine.errors import Problem
from engine.llm.client import LLMRequest, client_for
from engine.pipeline.hashing import digest
from engine.recipe.load import Located
from engine.recipe.section import Section
from engine.recipe.shared import LLMParams
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "questions"
VERSION = 2
DEPENDS = ("transcripts",)
COLUMNS = {
    "id": "VARCHAR",
    "video_id": "VARCHAR",
    "chunk": "INTEGER",
    "title": "VARCHAR",
    "question": "VARCHAR",
    "tags": "VARCHAR[]",
    "model": "VARCHAR",
    "prompt_digest": "VARCHAR",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "id": "The question's id (content hash).",
    "video_id": "The video it was asked of.",
    "chunk": "The transcript chunk it was asked of.",
    "title": "The video's title.",
    "question": "The question the LLM wrote (pass 1).",
    "tags": "Topic tags the LLM gave it.",
    "model": "The LLM that wrote it (llm.model or llm.passes.questions.model).",
    "prompt_digest": "sha256 prefix of the prompts used: rows from different prompts tell apart.",
}

SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["question"],
        "properties": {
            "question": {"type": "string", "minLength": 5},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    },
}
STANDALONE_SCHEMA = {"type": "object", "required": ["standalone"], "properties": {"standalone": {"type": "boolean"}}}

_INTERROGATIVE = {
    "what",
    "why",
    "how",
    "when",
    "where",
    "who",
    "whom",
    "whose",
    "which",
    "is",
    "are",
    "was",
    "were",
    "can",
    "could",
    "do",
    "does",
    "did",
    "should",
    "would",
    "will",
    "may",
    "might",
    "must",
    "has",
    "have",
    "shall",
    "am",
}
_POINTERS = re.compile(
    r"\b(?:this|the|that|these|your|his|her|their)\s+(?:video|videos|talk|"
    r"transcript|lecture|episode|clip|podcast|presentation|speaker|presenter|"
    r"narrator|host)\b",
    re.I,
)
_TITLES = {"dr", "prof", "mr", "mrs", "ms", "sir", "md", "phd"}


SECTION = "questions"
LLM_PASSES = ("questions",)
RETRY_FAILED_ROWS = True  # --retry-failed reruns it: finished calls come from the LLM cache


class QuestionsSettings(Section):
    """Pass 1: the questions each video answers."""

    min_per_video: int = Field(5, ge=1, description="Fewest questions asked for per video.")
    max_per_video: int = Field(15, ge=1, description="Most questions kept per video.")
    tags: bool = Field(True, description="Ask for topic tags per question.")
    drop_creator_mentions: bool = Field(
        True, description="Drop questions naming the creator, 'this video' or 'the transcript'."
    )
    standalone_check: bool = Field(
        False, description="Ask the LLM whether each question stands alone and drop those that do not."
    )


Settings = QuestionsSettings


@dataclass(frozen=True)
class Config:
    questions: QuestionsSettings
    creator: str
    prompts: Mapping[str, str]  # system, questions, standalone
    llm: LLMParams


def config(recipe: Recipe) -> Config:
    prompts = {k: getattr(recipe.prompts, k) for k in ("system", "questions", "standalone")}
    return Config(recipe.questions, recipe.creator.name, prompts, recipe.llm.for_pass("questions"))


def check(recipe: Recipe, located: Located) -> list[Problem]:
    q = recipe.questions
    if q.min_per_video > q.max_per_video:
        return [
            located.problem(
                ("questions", "min_per_video"), f"{q.min_per_video} is more than max_per_video ({q.max_per_video})"
            )
        ]
    return []


def question_id(video_id: str, question: str) -> str:
    """Stable id of a question of a video (also the id of its answer row)."""
    return digest([video_id, " ".join(question.lower().split())])[:16]


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    chunks = inputs["transcripts"].ok_rows()
    if not chunks:  # a recipe of dataset sources only: nothing to ask, no model to load
        _summarise(ctx, [], 0)
        return []
    q = cfg.questions
    per_video = Counter(c["video_id"] for c in chunks)
    prompt_digest = digest(cfg.prompts)[:16]
    model = cfg.llm.model
    requests = [
        LLMRequest(f"{c['video_id']}#{c['chunk']}", _messages(cfg, c, per_video[c["video_id"]]), SCHEMA) for c in chunks
    ]
    client = client_for(ctx, cfg.llm)
    with ctx.progress(len(requests), "asking for questions") as bar:
        results = client.run_many(requests, bar)
    rows: list[dict] = []
    seen: dict[str, set] = defaultdict(set)
    for chunk, result in zip(chunks, results, strict=True):
        base = {
            "video_id": chunk["video_id"],
            "chunk": chunk["chunk"],
            "title": chunk["title"],
            "model": model,
            "prompt_digest": prompt_digest,
        }
        if not result.ok:
            ctx.log.warning("questions failed for %s: %s", result.id, result.reason)
            rows.append(
                {
                    **base,
                    "id": digest([result.id, "failed"])[:16],
                    "question": None,
                    "tags": [],
                    "status": "failed",
                    "reason": result.reason,
                }
            )
            continue
        for item in result.value:
            rows.append(_row(base, item, q, cfg.creator, seen[chunk["video_id"]]))
    _cap_per_video(rows, q.max_per_video)
    if q.standalone_check:
        _standalone_check(ctx, cfg, rows)
    _summarise(ctx, rows, len(chunks))
    return rows


def _messages(cfg: Config, chunk: dict, chunks_of_video: int) -> list[dict]:
    q = cfg.questions
    # a video split into chunks shares its question budget between them
    n_min = max(1, math.ceil(q.min_per_video / chunks_of_video))
    n_max = max(n_min, math.ceil(q.max_per_video / chunks_of_video))
    user = cfg.prompts["questions"].format(
        creator=cfg.creator,
        title=chunk["title"] or chunk["video_id"],
        transcript=chunk["text"],
        min_questions=n_min,
        max_questions=n_max,
    )
    return [
        {"role": "system", "content": cfg.prompts["system"].format(creator=cfg.creator)},
        {"role": "user", "content": user},
    ]


def _row(base: dict, item: dict, q: Any, creator: str, seen: set) -> dict:
    question = normalise_question(item.get("question", ""))
    tags = [str(t).strip().lower() for t in item.get("tags") or [] if str(t).strip()] if q.tags else []
    reason = drop_reason(question, creator, q.drop_creator_mentions)
    key = question_id(base["video_id"], question)
    if reason is None and key in seen:
        reason = "duplicate question"
    seen.add(key)
    return {
        **base,
        "id": key,
        "question": question,
        "tags": tags,
        "status": "dropped" if reason else "ok",
        "reason": reason,
    }


def normalise_question(text: str) -> str:
    """One line, no list marker or quotes; a clear question gets its missing '?'."""
    text = " ".join(str(text).split())
    text = re.sub(r"^(?:Q(?:uestion)?\s*\d*\s*[:.)-]\s*|\d{1,3}\s*[.)]\s*|[-*•]\s+)", "", text)
    text = text.strip().strip("\"'“”").strip()
    words = text.split()
    if words and not text.endswith("?") and words[0].lower() in _INTERROGATIVE:
        text = text.rstrip(".!") + "?"
    return text


def drop_reason(question: str, creator: str, drop_mentions: bool) -> str | None:
    """Why the deterministic filter drops a question, or None to keep it."""
    if len(question.split()) < 3:
        return "too short to be a question"
    if not question.endswith("?"):
        return "not a question"
    if drop_mentions:
        if _POINTERS.search(question):
            return "refers to the video or transcript"
        names = [w for w in re.findall(r"[\w'-]+", creator) if len(w) >= 3 and w.lower() not in _TITLES]
        if any(re.search(rf"\b{re.escape(n)}\b", question, re.I) for n in names):
            return "mentions the creator"
    return None


def _cap_per_video(rows: list[dict], cap: int) -> None:
    kept: Counter = Counter()
    for row in rows:
        if row["status"] != "ok":
            continue
        kept[row["video_id"]] += 1
        if kept[row["video_id"]] > cap:
            row["status"], row["reason"] = "dropped", f"over max_per_video ({cap})"


def _standalone_check(ctx: Any, cfg: Config, rows: list[dict]) -> None:
    """Ask the model whether each kept question stands alone; a failed check keeps it."""
    keep = [r for r in rows if r["status"] == "ok"]
    template = cfg.prompts["standalone"]
    requests = [
        LLMRequest(
            r["id"],
            [{"role": "user", "content": template.format(question=r["question"], creator=cfg.creator)}],
            STANDALONE_SCHEMA,
        )
        for r in keep
    ]
    with ctx.progress(len(requests), "standalone check") as bar:
        results = client_for(ctx, cfg.llm).run_many(requests, bar)
    unchecked = 0
    for row, result in zip(keep, results, strict=True):
        if not result.ok:
            unchecked += 1
        elif not result.value["standalone"]:
            row["status"], row["reason"] = "dropped", "not standalone (LLM check)"
    ctx.metrics["standalone_unchecked"] = unchecked


def _summarise(ctx: Any, rows: list[dict], chunks: int) -> None:
    status = Counter(r["status"] for r in rows)
    dropped = Counter(r["reason"] for r in rows if r["status"] == "dropped")
    ctx.metrics.update(chunks=chunks, questions=status["ok"], dropped=dict(dropped), failed_chunks=status["failed"])
    ctx.log.info(
        "questions: %d kept from %d chunks, %d dropped, %d chunks failed",
        status["ok"],
        chunks,
        sum(dropped.values()),
        status["failed"],
    )
