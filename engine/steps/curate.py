"""curate: quality filters, optional LLM score, near-duplicate removal; every drop keeps its reason.

Order matters: cheap per-row filters first (so a broken answer can never win a duplicate
group), then the optional LLM score (it ranks duplicate groups), then dedup across the whole
dataset, then `keep_top`, then the dataset-level formatting share. Dropped rows stay in the
table with status='dropped'; duplicates also name the row they duplicate and the similarity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from engine.data import quality
from engine.data.dedup import find_duplicates
from engine.data.settings import Filters
from engine.data.stats import dataset_stats, length_histograms
from engine.errors import Problem
from engine.recipe.load import Located
from engine.recipe.shared import LLMParams
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "curate"
# 3: answers that repeat their question are dropped
# 4: dedup defaults to token_sort_ratio, language by py3langid, banned video/talk/material references
VERSION = 4
DEPENDS = ("answers",)
COLUMNS = {
    "id": "VARCHAR",
    "video_id": "VARCHAR",
    "title": "VARCHAR",
    "question": "VARCHAR",
    "answer": "VARCHAR",
    "tags": "VARCHAR[]",
    "score": "DOUBLE",
    "quality": "DOUBLE",
    "duplicate_of": "VARCHAR",
    "similarity": "DOUBLE",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "id": "The row's id (answers.id).",
    "video_id": "The video it comes from.",
    "title": "The video's title.",
    "question": "The question.",
    "answer": "The answer.",
    "tags": "Topic tags.",
    "score": "The LLM's 0-100 quality score; NULL in every row when filters.llm_score is off "
    "(the deterministic `quality` ranks rows then).",
    "quality": "A deterministic 0-100 quality guess (length, structure, a real question); ranks duplicates.",
    "duplicate_of": "The id of the kept row this one duplicates; NULL unless dropped as a duplicate.",
    "similarity": "Similarity (0-100) to the row it duplicates; NULL unless dropped as a duplicate.",
}

SCORE_SCHEMA = {
    "type": "object",
    "required": ["score"],
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 100}},
}


SECTION = "filters"
Settings = Filters
LLM_PASSES = ("score",)
RETRY_FAILED_ROWS = True  # --retry-failed reruns it: finished calls come from the LLM cache


@dataclass(frozen=True)
class Config:
    filters: Filters
    language: str
    # The scorer's prompt and model only matter (and only key the step) when scoring is on.
    score_prompt: str | None = None
    score_llm: LLMParams | None = None
    creator: str | None = None  # the score prompt may name {creator}


def config(recipe: Recipe) -> Config:
    filters: Filters = recipe.filters
    if not filters.llm_score.enabled:
        return Config(filters, recipe.creator.language)
    return Config(
        filters, recipe.creator.language, recipe.prompts.score, recipe.llm.for_pass("score"), recipe.creator.name
    )


def check(recipe: Recipe, located: Located) -> list[Problem]:
    """Every `re:` entry of banned_phrases must compile (the schema only knows they are strings)."""
    problems = []
    for i, phrase in enumerate(recipe.filters.banned_phrases):
        error = quality.banned_pattern_error(phrase)
        if error:
            message = (
                f"bad regex {phrase!r}: {error}; fix the expression after `re:`, or drop the `re:` prefix "
                "to match the text literally"
            )
            problems.append(located.problem(("filters", "banned_phrases", i), message))
    return problems


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    upstream = inputs["answers"].rows()
    rows = sorted((_base(r) for r in upstream if r["status"] == "ok"), key=lambda r: (r["video_id"], r["id"]))
    filters = cfg.filters
    stages = {"answers": len(upstream), "answers_ok": len(rows)}
    for row in rows:
        _drop(row, quality.row_reason(row, filters, cfg.language))
    stages["after_filters"] = _live_count(rows)
    if filters.llm_score.enabled:
        _score(ctx, cfg, _live(rows))
        stages["after_score"] = _live_count(rows)
    if filters.dedup.enabled:
        _dedup(ctx, filters.dedup.workers, filters.dedup, _live(rows))
        stages["after_dedup"] = _live_count(rows)
    if filters.llm_score.enabled:
        _keep_top(_live(rows), filters.llm_score.keep_top)
        stages["after_keep_top"] = _live_count(rows)
    live = {r["id"]: r for r in _live(rows)}
    ranks = {rid: _rank(r) for rid, r in live.items()}
    for rid, reason in quality.share_drops(list(live.values()), filters.formatting, ranks).items():
        _drop(live[rid], reason)
    stages["kept"] = _live_count(rows)
    _summarise(ctx, rows, stages)
    return rows


def _base(r: dict) -> dict:
    q = quality.heuristic_score(r["question"] or "", r["answer"] or "")
    return {
        "id": r["id"],
        "video_id": r["video_id"],
        "title": r.get("title"),
        "question": r["question"] or "",
        "answer": r["answer"] or "",
        "tags": list(r.get("tags") or []),
        "score": None,
        "quality": q,
        "duplicate_of": None,
        "similarity": None,
        "status": "ok",
        "reason": None,
    }


def _drop(row: dict, reason: str | None, status: str = "dropped") -> None:
    if reason:
        row["status"], row["reason"] = status, reason


def _live(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok"]


def _live_count(rows: list[dict]) -> int:
    return sum(r["status"] == "ok" for r in rows)


def _rank(row: dict) -> float:
    """The LLM score when there is one, else the deterministic heuristic."""
    return row["score"] if row["score"] is not None else row["quality"]


def _score(ctx: StepContext, cfg: Config, rows: list[dict]) -> None:
    from engine.llm.client import LLMRequest, client_for  # lazy: litellm only when scoring is on

    assert cfg.score_prompt is not None and cfg.score_llm is not None  # config() sets both when scoring
    prompt = cfg.score_prompt
    requests = [
        LLMRequest(
            r["id"],
            [
                {
                    "role": "user",
                    "content": prompt.format(question=r["question"], answer=r["answer"], creator=cfg.creator),
                }
            ],
            SCORE_SCHEMA,
        )
        for r in rows
    ]
    with ctx.progress(len(requests), "scoring answers") as bar:
        results = client_for(ctx, cfg.score_llm).run_many(requests, bar)
    for row, result in zip(rows, results, strict=True):
        if result.ok:
            row["score"] = float(result.value["score"])
        else:  # one bad call never fails the run: the row is marked and stays auditable
            _drop(row, f"score failed: {result.reason}", status="failed")


def _dedup(ctx: Any, workers: int, cfg: Any, rows: list[dict]) -> None:
    started = time.perf_counter()
    dups = find_duplicates(
        [r["question"] for r in rows],
        [_rank(r) for r in rows],
        scorer=cfg.scorer,
        threshold=cfg.threshold,
        workers=workers,
    )
    for d in dups:
        row, kept = rows[d.index], rows[d.kept]
        row.update(status="dropped", reason="duplicate", duplicate_of=kept["id"], similarity=d.similarity)
    ctx.metrics["dedup"] = {
        "compared": len(rows),
        "duplicates": len(dups),
        "groups": len({d.group for d in dups}),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _keep_top(rows: list[dict], keep_top: float) -> None:
    ordered = sorted(rows, key=lambda r: (-r["score"], r["id"]))
    n = quality.top_cutoff([r["score"] for r in ordered], keep_top)
    for row in ordered[n:]:
        if not n:
            _drop(row, f"below keep_top (top {keep_top:g}% keeps no row)")
            continue
        cutoff = ordered[n - 1]["score"]  # a row tied with the last kept one lost on id order
        relation = "<" if row["score"] < cutoff else "tied with"
        _drop(row, f"below keep_top ({row['score']:g} {relation} {cutoff:g}, top {keep_top:g}%)")


def _summarise(ctx: Any, rows: list[dict], stages: dict[str, int]) -> None:
    kept = _live(rows)
    stats = dataset_stats(rows, kept)
    ctx.metrics.update(
        kept=len(kept),
        dropped=stats["dropped"],
        duplicates=stats["reasons"].get("duplicate", 0),
        stages=stages,
        **{k: v for k, v in stats.items() if k not in ("rows", "kept", "dropped")},
    )
    plot = length_histograms(ctx.work_dir / "plots" / "curated_lengths.png", "curated Q&A lengths", kept)
    if plot:
        ctx.metrics["plots"] = [str(plot.relative_to(ctx.work_dir))]
