"""The `filters` section of a recipe: how generated Q&A is curated. Owned by the curate step."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.recipe.section import Section


class Dedup(Section):
    """Near-duplicate questions across the whole dataset (rapidfuzz)."""

    UNKEYED: ClassVar[frozenset[str]] = frozenset({"workers"})  # speed, never the result

    enabled: bool = Field(True, description="Remove near-duplicate questions.")
    scorer: Literal["token_set_ratio", "token_sort_ratio", "ratio", "partial_ratio", "WRatio", "QRatio"] = Field(
        "token_set_ratio",
        description="rapidfuzz scorer. token_set_ratio (default) scores 100 when one question's words are a "
        "subset of the other's, so it is aggressive: on benchmarks/dedup.py it found every planted "
        "duplicate but only 10% of its pairs were true duplicates; token_sort_ratio found 94 of 98 at "
        "62% precision. Check the dropped rows (`recipe show`, reason `duplicate`) and switch if it "
        "removes distinct questions.",
    )
    threshold: float = Field(
        85, ge=0, le=100, description="Similarity (0-100) at or above which two questions are duplicates."
    )
    workers: int = Field(-1, ge=-1, description="Threads for rapidfuzz (-1: all cores).")


class AnswerLength(Section):
    """Answer length bounds."""

    unit: Literal["chars", "words"] = Field("chars", description="`chars` or `words`.")
    min: int = Field(100, ge=0, description="Shortest answer kept.")
    max: int | None = Field(6000, ge=1, description="Longest answer kept; null for no bound.")


class Formatting(Section):
    """Required formatting."""

    require: tuple[Literal["paragraphs", "bold", "lists"], ...] = Field((), description="Formatting features required.")
    mode: Literal["row", "share"] = Field(
        "row",
        description="`row`: every answer needs all of them; `share`: keep "
        "unformatted answers only while at least `min_share` "
        "of the dataset has them.",
    )
    min_share: float = Field(
        0.8, ge=0, le=1, description="Least share of answers with each required feature (mode `share`)."
    )


class LLMScore(Section):
    """Optional quality score 0-100 from the LLM."""

    enabled: bool = Field(False, description="Score every answer.")
    keep_top: float = Field(80, ge=0, le=100, description="Keep this percent of answers, best first.")


class Filters(Section):
    """Curation of the generated Q&A."""

    dedup: Dedup = Field(default_factory=Dedup, description=Dedup.__doc__)
    answer_length: AnswerLength = Field(default_factory=AnswerLength, description=AnswerLength.__doc__)
    formatting: Formatting = Field(default_factory=Formatting, description=Formatting.__doc__)
    banned_phrases: tuple[str, ...] = Field(
        ("the transcript", "in this video", "as mentioned", "the speaker", "in the video"),
        description="Answers containing any of these (case-insensitive) are dropped.",
    )
    require_language: bool = Field(True, description="Drop empty answers and answers not in `creator.language`.")
    llm_score: LLMScore = Field(default_factory=LLMScore, description=LLMScore.__doc__)
