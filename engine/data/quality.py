"""Quality filters for generated answers; each returns its own drop reason (None = keep).

Reasons follow the engine's convention `kind (details)` so `recipe show` groups them by kind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from engine.data.settings import AnswerLength, Formatting

FEATURES = {
    "paragraphs": re.compile(r"\S[ \t]*\n[ \t]*\n\s*\S"),
    "bold": re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
    "lists": re.compile(r"^[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+\S", re.MULTILINE),
}

# A few very common function words per language: enough to tell a language apart cheaply,
# without a language-detection dependency. Unknown languages skip the check (empty still drops).
STOPWORDS = {
    "en": "the a an and or but of to in on at for with is are was were be been it this that "
    "you your i we they he she not do does can will as by from so if have has what when "
    "how why which there their more than about into just also very".split(),
    "de": "der die das und oder aber nicht ist sind war ein eine zu mit von auf für den dem "
    "es ich du wir sie er auch wie was wenn so im am bei".split(),
    "fr": "le la les et ou mais de des du un une est sont pas ne à au en pour avec que qui "
    "il elle nous vous ce cette dans sur par plus se".split(),
    "es": "el la los las y o pero de del un una es son no en con por para que se lo como "
    "más su al este esta muy".split(),
}
MIN_STOPWORD_SHARE = 0.12
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def has_feature(answer: str, feature: str) -> bool:
    return bool(FEATURES[feature].search(answer or ""))


def length_reason(answer: str, cfg: AnswerLength) -> str | None:
    size = len(answer.split()) if cfg.unit == "words" else len(answer)
    if size < cfg.min:
        return f"too short ({size} < {cfg.min} {cfg.unit})"
    if cfg.max is not None and size > cfg.max:
        return f"too long ({size} > {cfg.max} {cfg.unit})"
    return None


def banned_hits(text: str, phrases: Sequence[str]) -> list[str]:
    """Banned phrases in `text`, case and whitespace folded (curation and evaluation share this)."""
    low = " ".join(text.lower().split())
    return [p for p in phrases if p and " ".join(p.lower().split()) in low]


def banned_reason(answer: str, phrases: Sequence[str]) -> str | None:
    hits = banned_hits(answer, phrases)
    return f"banned phrase: {hits[0]}" if hits else None


def stopword_share(text: str, language: str) -> float | None:
    """Share of words that are common function words of `language` (None: unknown language)."""
    words = STOPWORDS.get(language.split("-")[0].lower())
    if words is None:
        return None
    tokens = [t.lower() for t in _WORD.findall(text)]
    if not tokens:
        return 0.0
    known = set(words)
    return sum(t in known for t in tokens) / len(tokens)


def language_reason(answer: str, language: str) -> str | None:
    if not answer or not answer.strip():
        return "empty answer"
    share = stopword_share(answer, language)
    # Very short answers have too few words for the ratio to mean anything.
    if share is not None and len(answer.split()) >= 8 and share < MIN_STOPWORD_SHARE:
        return f"wrong language (stopwords {share:.0%} < {MIN_STOPWORD_SHARE:.0%} for {language})"
    return None


# Words a model puts around a question it merely echoes ("Q: ...", "Question: ... Answer:").
ECHO_LABELS = frozenset({"q", "a", "question", "answer", "re"})


def _words(text: str) -> list[str]:
    """Lower-case words, punctuation and spacing ignored."""
    return re.findall(r"[^\W_]+", text.lower())


def repeats_question(question: str, answer: str) -> bool:
    """Whether the answer is only its question again: once case, spacing and punctuation are
    ignored, the question's words in order (once or more), with nothing else but labels such
    as "Q:" or "Answer:". "Can you fast? Yes." says something, so it is not a repeat."""
    q, a = _words(question), _words(answer)
    if not q or not a:
        return False
    rest, i, found = list(a), 0, False
    while i + len(q) <= len(rest):  # cut every occurrence of the question out of the answer
        if rest[i : i + len(q)] == q:
            del rest[i : i + len(q)]
            found = True
        else:
            i += 1
    return found and set(rest) <= ECHO_LABELS


def repeat_reason(question: str, answer: str) -> str | None:
    return "repeats the question" if repeats_question(question, answer) else None


def formatting_reason(answer: str, cfg: Formatting) -> str | None:
    """Per-row mode: every required feature must be present."""
    if cfg.mode != "row":
        return None
    missing = [f for f in cfg.require if not has_feature(answer, f)]
    return f"missing formatting: {', '.join(missing)}" if missing else None


def row_reason(row: dict, filters: Any, language: str) -> str | None:
    """The first per-row filter an answer fails, cheapest first."""
    answer = row.get("answer") or ""
    checks = [
        lambda: repeat_reason(row.get("question") or "", answer),
        (lambda: language_reason(answer, language))
        if filters.require_language
        else (lambda: "empty answer" if not answer.strip() else None),
        lambda: length_reason(answer, filters.answer_length),
        lambda: banned_reason(answer, filters.banned_phrases),
        lambda: formatting_reason(answer, filters.formatting),
    ]
    for check in checks:
        reason = check()
        if reason:
            return reason
    return None


def share_drops(rows: list[dict], cfg: Formatting, quality: dict[str, float]) -> dict[str, str]:
    """Dataset-share mode: drop the weakest rows lacking a feature until its share reaches min_share.

    Returns {row id: reason}. Rows are dropped lowest quality first (ties by id) so the
    outcome is deterministic.
    """
    if cfg.mode != "share" or not cfg.require:
        return {}
    dropped: dict[str, str] = {}
    for feature in cfg.require:
        live = [r for r in rows if r["id"] not in dropped]
        with_it = sum(has_feature(r["answer"], feature) for r in live)
        # smallest d with with_it / (len(live) - d) >= min_share
        need = len(live) - (with_it / cfg.min_share if cfg.min_share > 0 else len(live))
        n_drop = max(0, math.ceil(need - 1e-9))
        lacking = sorted(
            (r for r in live if not has_feature(r["answer"], feature)),
            key=lambda r: (quality.get(r["id"], 0.0), r["id"]),
        )
        share = with_it / len(live) if live else 0.0
        for r in lacking[:n_drop]:
            dropped[r["id"]] = f"formatting share: {feature} ({share:.0%} < {cfg.min_share:.0%})"
    return dropped


def heuristic_score(question: str, answer: str) -> float:
    """A deterministic 0-100 quality guess used when no LLM score exists.

    Rewards substance (up to ~150 words), structure (paragraphs, bold, lists) and a real
    question; the numbers only need to rank rows sensibly inside a duplicate group.
    """
    words = len((answer or "").split())
    score = 50.0 * min(words, 150) / 150
    score += 12.0 * has_feature(answer, "paragraphs") + 12.0 * has_feature(answer, "bold")
    score += 11.0 * has_feature(answer, "lists")
    score += 15.0 * question.strip().endswith("?")
    return round(score, 2)


def top_cutoff(scores: Sequence[float], keep_top: float) -> int:
    """How many of `scores` the keep_top percent keeps (at least one if any are kept)."""
    if not scores or keep_top <= 0:
        return 0
    return max(1, math.ceil(len(scores) * keep_top / 100 - 1e-9))
