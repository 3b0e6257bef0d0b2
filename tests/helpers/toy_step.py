"""toy: counts the words of every transcript chunk (a step registered only by tests/test_adding_a_step.py).

It is the smallest complete step: a module, its config class, and one registry line. The test
shows that with nothing else edited it appears in the schema, `recipe plan`, `recipe show` and
`recipe diff`; docs/adding-a-step.md walks through the same file.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from engine.errors import Problem
from engine.recipe.load import Located
from engine.recipe.section import Section
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "toy"
VERSION = 1
DEPENDS = ("transcripts",)
COLUMNS = {"video_id": "VARCHAR", "chunk": "INTEGER", "words": "INTEGER", "status": "VARCHAR", "reason": "VARCHAR"}
COLUMN_DOCS = {
    "video_id": "The video (sources.video_id).",
    "chunk": "The chunk's number within the video's transcript.",
    "words": "Words in the chunk.",
}
SECTION = "toy"


class ToySettings(Section):
    """Word counts per transcript chunk (a test step)."""

    min_words: int = Field(1, ge=0, description="Chunks with fewer words are kept as 'skipped' rows.")
    max_words: int | None = Field(None, ge=1, description="Chunks with more words are skipped too; null: no bound.")


Settings = ToySettings


@dataclass(frozen=True)
class Config:
    toy: ToySettings
    creator: str  # unused by the logic; shows that shared recipe fields reach a step through its config


def config(recipe: Recipe) -> Config:
    return Config(recipe.toy, recipe.creator.name)


def check(recipe: Recipe, located: Located) -> list[Problem]:
    toy: ToySettings = recipe.toy
    if toy.max_words is not None and toy.min_words > toy.max_words:
        return [located.problem(("toy", "min_words"), f"{toy.min_words} is more than max_words ({toy.max_words})")]
    return []


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    rows = []
    for chunk in inputs["transcripts"].ok_rows():
        words = len(chunk["text"].split())
        too_long = cfg.toy.max_words is not None and words > cfg.toy.max_words
        status = "skipped" if words < cfg.toy.min_words or too_long else "ok"
        rows.append(
            {
                "video_id": chunk["video_id"],
                "chunk": chunk["chunk"],
                "words": words,
                "status": status,
                "reason": None if status == "ok" else f"word count {words} outside the bounds",
            }
        )
    ctx.metrics.update(chunks=len(rows), words=sum(r["words"] for r in rows))
    return rows
