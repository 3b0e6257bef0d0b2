"""The `filters` section of a recipe: how generated Q&A is curated. Owned by the curate step."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.recipe.section import Section

REGEX_PREFIX = "re:"  # a banned_phrases entry that is a regular expression

# Where a generated answer gives away that it was written from a video. Measured on a real channel
# (issue 13), the plain phrases caught 11 leaks but missed "The video mentions...", "the talk" (3)
# and "the material" (~6). "talk" and "material" are ordinary words ("talk to your doctor", "the
# material in fat cells"), so they are banned only after a preposition that points at a source, or
# before a verb of speaking.
_SOURCES = "video|videos|clip|talk|lecture|presentation|transcript|material|materials|episode|podcast|webinar"
_SAYS = (
    "mentions|mentioned|says|said|explains|explained|discusses|discussed|describes|described|notes|noted|"
    "suggests|suggested|states|stated|highlights|highlighted|covers|covered|emphasi[sz]es|emphasi[sz]ed|"
    "points out|pointed out|argues|argued|"
    "(?:does not|doesn't|did not|didn't) (?:mention|say|specify|cover|discuss|address|explain|detail|go into)"
)
BANNED_PHRASES = (
    "the transcript",
    "the speaker",
    "as mentioned",
    f"{REGEX_PREFIX}\\b(?:in|from|according to|based on|throughout|per) (?:the|this|that) (?:{_SOURCES})\\b",
    f"{REGEX_PREFIX}\\b(?:the|this) (?:{_SOURCES}|speaker|presenter) (?:{_SAYS})\\b",
    f"{REGEX_PREFIX}\\bthe (?:provided|given) (?:{_SOURCES}|text)\\b|\\bthe (?:{_SOURCES}) (?:provided|given)\\b",
)


class Dedup(Section):
    """Near-duplicate questions across the whole dataset (rapidfuzz)."""

    UNKEYED: ClassVar[frozenset[str]] = frozenset({"workers"})  # speed, never the result

    enabled: bool = Field(True, description="Remove near-duplicate questions.")
    scorer: Literal["token_sort_ratio", "token_set_ratio", "ratio", "partial_ratio", "WRatio", "QRatio"] = Field(
        "token_sort_ratio",
        description="rapidfuzz scorer. Measured on 1,709 real Q&A pairs of a health channel: token_sort_ratio "
        ">= 85 (default) dropped 27 questions at 96% precision in 0.4 s; token_set_ratio >= 85 dropped 96 at "
        "~75% precision, because it scores 100 whenever one question's words are a subset of the other's "
        '("fasting vs starvation" lost against a white/brown fat question, an insulin question against the '
        "same one about testosterone). token_set_ratio catches more rewordings at the cost of distinct "
        "questions; ratio is stricter about word order. Check the dropped rows (`recipe show`, reason "
        "`duplicate`) after switching.",
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
        BANNED_PHRASES,
        description="Answers containing any of these (case-insensitive, spacing ignored) are dropped, and "
        "evaluation counts them in both models' answers. An entry starting with `re:` is a regular "
        "expression; the defaults use two so that leaks like `the video mentions` or `according to the "
        "talk` are caught while `talk to your doctor` is not.",
    )
    require_language: bool = Field(True, description="Drop empty answers and answers not in `creator.language`.")
    llm_score: LLMScore = Field(default_factory=LLMScore, description=LLMScore.__doc__)
