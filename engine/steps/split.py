"""split: train / valid / test by video (default), by tag strata, or by row; writes mlx-lm JSONL.

Only original rows are assigned; augmented rows follow their origin (via `origin_id`), so a
paraphrase can never sit in valid while its source trains. Grouping by video means no talk
appears in two splits. The shuffle is seeded, so a recipe always gives the same split. With two
or more videos at least one lands in valid (mlx-lm needs a non-empty validation set).
Files: work_dir/data/{train,valid,test}.jsonl as {"messages": [system?, user, assistant]}.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from engine.data.jsonl import chat_messages, write_jsonl
from engine.data.stats import length_histograms, lengths
from engine.errors import Problem
from engine.recipe.load import Located
from engine.recipe.section import Section, prompt_field
from engine.recipe.shared import render_system_prompt
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "split"
VERSION = 2
DEPENDS = ("augment",)
COLUMNS = {
    "id": "VARCHAR",
    "origin_id": "VARCHAR",
    "video_id": "VARCHAR",
    "split": "VARCHAR",
    "kind": "VARCHAR",
    "question": "VARCHAR",
    "answer": "VARCHAR",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "id": "The row's id (augment.id).",
    "origin_id": "The original row it follows into the same split.",
    "video_id": "The video it comes from (split.by: video keeps a video in one split).",
    "split": "train | valid | test.",
    "kind": "original, or the augmentation that made it.",
    "question": "The question (the user turn in data/*.jsonl).",
    "answer": "The answer (the assistant turn in data/*.jsonl).",
}
SPLITS = ("train", "valid", "test")


SECTION = "split"


class SplitSettings(Section):
    """Train / valid / test split."""

    valid: float = Field(0.15, ge=0, lt=1, description="Share of videos for validation.")
    test: float = Field(0.0, ge=0, lt=1, description="Share of videos held out for evaluation.")
    by: Literal["video", "tag", "random"] = Field(
        "video",
        description="`video`: no video in two splits; `tag`: stratified by first tag, still grouped by "
        "video; `random`: rows.",
    )
    seed: int = Field(42, ge=0, description="Seed of the shuffle.")
    system_prompt: str | None = prompt_field(
        None, allowed={"creator"}, description="System message in every training example; null for none."
    )


Settings = SplitSettings


@dataclass(frozen=True)
class Config:
    split: SplitSettings
    system: str | None  # the rendered system prompt of every example


def config(recipe: Recipe) -> Config:
    return Config(recipe.split, render_system_prompt(recipe.split.system_prompt, recipe.creator.name))


def check(recipe: Recipe, located: Located) -> list[Problem]:
    split = recipe.split
    total = split.valid + split.test
    if total >= 1:
        where = ("split", "test") if located.has(("split", "test")) else ("split", "valid")
        return [
            located.problem(
                where,
                f"valid + test = {total:g} leaves nothing to train on; keep the sum below 1 "
                "(e.g. valid: 0.1, test: 0.1)",
            )
        ]
    return []


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    rows = sorted(inputs["augment"].ok_rows(), key=lambda r: (r["video_id"], r["origin_id"], r["id"]))
    originals = [r for r in rows if r["kind"] == "original"]
    assign = assign_splits(originals, cfg.split, ctx.log)
    out = []
    for r in rows:
        side = assign.get(r["origin_id"])
        status, reason = ("ok", None) if side else ("skipped", "origin not in the dataset")
        out.append(
            {
                "id": r["id"],
                "origin_id": r["origin_id"],
                "video_id": r["video_id"],
                "split": side,
                "kind": r["kind"],
                "question": r["question"],
                "answer": r["answer"],
                "status": status,
                "reason": reason,
            }
        )
    _write_jsonl(ctx, out, cfg)
    _summarise(ctx, out)
    return out


def assign_splits(originals: list[dict], cfg: Any, log: Any = None) -> dict[str, str]:
    """{original row id: split}. Deterministic for a seed and the set of rows."""
    videos = sorted({r["video_id"] for r in originals})
    if cfg.by == "random" or len(videos) < 2:
        if cfg.by != "random" and originals and log is not None:
            log.warning("split: only one video, splitting its rows instead (valid shares the video)")
        ids = sorted(r["id"] for r in originals)
        return dict(zip(ids, _allocate(ids, cfg), strict=True))
    if cfg.by == "tag":
        videos = _stratified_order(originals, videos, cfg.seed)
    else:
        random.Random(cfg.seed).shuffle(videos)
    by_video = dict(zip(videos, _allocate(videos, cfg, shuffle=False), strict=True))
    return {r["id"]: by_video[r["video_id"]] for r in originals}


def _allocate(items: list[str], cfg: Any, shuffle: bool = True) -> list[str]:
    """A split name for each item: counts from the ratios, at least one valid when possible."""
    order = list(items)
    if shuffle:
        random.Random(cfg.seed).shuffle(order)
    n = len(order)
    n_valid = round(n * cfg.valid)
    n_test = round(n * cfg.test)
    if n >= 2:
        n_valid = max(1, n_valid)
    if cfg.test > 0 and n >= 3:
        n_test = max(1, n_test)
    while n_valid + n_test > max(0, n - 1):  # training keeps at least one item
        if n_valid > n_test:
            n_valid -= 1
        else:  # on a tie the test split gives way: validation is what training needs
            n_test -= 1
    sides = ["valid"] * n_valid + ["test"] * n_test + ["train"] * (n - n_valid - n_test)
    position = {item: i for i, item in enumerate(order)}
    return [sides[position[item]] for item in items]


def _stratified_order(originals: list[dict], videos: list[str], seed: int) -> list[str]:
    """Videos ordered so that taking a prefix samples every tag in proportion.

    A video's stratum is its most common first tag. Videos are shuffled inside each stratum and
    the strata interleaved by their fractional position, so the valid/test prefix of the
    allocation draws from every tag rather than from whichever came first.
    """
    firsts: dict[str, Counter] = defaultdict(Counter)
    for r in originals:
        firsts[r["video_id"]][(r.get("tags") or ["(none)"])[0]] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for v in videos:
        tag = max(sorted(firsts[v].items()), key=lambda kv: kv[1])[0] if firsts[v] else "(none)"
        strata[tag].append(v)
    rng = random.Random(seed)
    keyed = []
    for tag in sorted(strata):
        members = strata[tag]
        rng.shuffle(members)
        offset = rng.random()
        keyed += [((i + offset) / len(members), tag, v) for i, v in enumerate(members)]
    return [v for _, _, v in sorted(keyed)]


def _write_jsonl(ctx: StepContext, rows: list[dict], cfg: Config) -> None:
    folder = ctx.work_dir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for side in SPLITS:
        chosen = [r for r in rows if r["split"] == side and r["status"] == "ok"]
        if side == "test" and not chosen:
            continue  # mlx-lm treats a missing test file as "no test set"
        write_jsonl(folder / f"{side}.jsonl", (chat_messages(r["question"], r["answer"], cfg.system) for r in chosen))


def _summarise(ctx: Any, rows: list[dict]) -> None:
    ok = [r for r in rows if r["status"] == "ok"]
    per = {side: [r for r in ok if r["split"] == side] for side in SPLITS}
    ctx.metrics.update({side: len(per[side]) for side in SPLITS})
    ctx.metrics["videos"] = {side: len({r["video_id"] for r in per[side]}) for side in SPLITS}
    ctx.metrics["kinds"] = {side: dict(Counter(r["kind"] for r in per[side])) for side in SPLITS if per[side]}
    ctx.metrics["skipped"] = len(rows) - len(ok)
    ctx.metrics["lengths"] = lengths(per["train"])
    plot = length_histograms(ctx.work_dir / "plots" / "train_lengths.png", "training set lengths", per["train"])
    if plot:
        ctx.metrics["plots"] = [str(plot.relative_to(ctx.work_dir))]
