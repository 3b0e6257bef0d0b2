"""Quality filters for generated answers; each returns its own drop reason (None = keep).

Reasons follow the engine's convention `kind (details)` so `recipe show` groups them by kind.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from engine.data.settings import REGEX_PREFIX, AnswerLength, Formatting

FEATURES = {
    "paragraphs": re.compile(r"\S[ \t]*\n[ \t]*\n\s*\S"),
    "bold": re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
    "lists": re.compile(r"^[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+\S", re.MULTILINE),
}

# A language-identification model (py3langid: 97 languages, ~5 MB, offline, ~0.1 ms per answer;
# benchmarks/language_id.py) instead of a share of common words, which dropped English bullet
# lists of bold key terms. An answer is dropped only when the model gives the recipe's language
# almost no chance: English answers full of drug or food names still get >= 1%, answers in
# another language get <= 0.01%, so the cutoff sits between them.
MIN_LANGUAGE_PROBABILITY = 0.001
# Markdown markers and list bullets carry no language; removing them sharpens short lists.
_MARKUP = re.compile(r"[*_#>`|~]+|^[ \t]*(?:[-+•]|\d{1,2}[.)])[ \t]+", re.MULTILINE)


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
    """Banned phrases in `text`, case and whitespace folded (curation and evaluation share this).

    An entry starting with `re:` is a regular expression searched case-insensitively in the
    folded text (one space between words); any other entry is a plain phrase.
    """
    low = " ".join(text.lower().split())
    return [p for p in phrases if p and _banned_matcher(p)(low)]


@functools.lru_cache(maxsize=512)
def _banned_matcher(phrase: str) -> Callable[[str], bool]:
    if phrase.startswith(REGEX_PREFIX):
        pattern = re.compile(phrase[len(REGEX_PREFIX) :], re.IGNORECASE)
        return lambda text: pattern.search(text) is not None
    folded = " ".join(phrase.lower().split())
    return lambda text: folded in text


def banned_pattern_error(phrase: str) -> str | None:
    """Why a `re:` entry of banned_phrases does not compile (None: fine, or a plain phrase)."""
    if not phrase.startswith(REGEX_PREFIX):
        return None
    try:
        re.compile(phrase[len(REGEX_PREFIX) :])
    except re.error as e:
        return str(e)
    return None


def banned_reason(answer: str, phrases: Sequence[str]) -> str | None:
    hits = banned_hits(answer, phrases)
    return f"banned phrase: {hits[0]}" if hits else None


@functools.lru_cache(maxsize=1)
def _language_identifier() -> Any:
    # lazy: the model takes ~0.6 s to load and only curation with require_language needs it
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # type: ignore[import-untyped]  # no stubs

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_probabilities(text: str) -> dict[str, float]:
    """Probability of each language the model knows (ISO 639-1 codes) for `text`."""
    plain = _MARKUP.sub(" ", text)
    return dict(_language_identifier().rank(plain))


def language_reason(answer: str, language: str) -> str | None:
    if not answer or not answer.strip():
        return "empty answer"
    probabilities = language_probabilities(answer)
    target = probabilities.get(language.split("-")[0].lower())
    if target is None:  # a language the model does not know: nothing to judge by
        return None
    if target >= MIN_LANGUAGE_PROBABILITY:
        return None
    likeliest = max(probabilities, key=probabilities.__getitem__)
    return (
        f"wrong language (looks like {likeliest}, not {language}: "
        f"P({language}) {target:.1g} < {MIN_LANGUAGE_PROBABILITY:g})"
    )


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
