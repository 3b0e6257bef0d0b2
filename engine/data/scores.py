"""Pure scoring functions for the evaluation step: no models, no I/O, easy to test.

Every score compares a list of answers (base or tuned) against either the training data (format
shares, lengths) or a probe's expectation (words its answer must include). The original pipeline's only score was a
bold/list heuristic and its runs looped the same sentence 30-40 times; `repetition` catches that.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from statistics import mean, median
from typing import Any

from engine.data.eval_set import EvalQuestion, missing_words
from engine.data.quality import banned_hits

SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
WORD = re.compile(r"\w+(?:'\w+)?")
FEATURES = ("paragraphs", "bold", "lists")


def format_features(text: str) -> dict[str, bool]:
    """Which formatting features an answer uses, detected exactly as the curate filter does."""
    from engine.data.quality import has_feature

    return {f: has_feature(text, f) for f in FEATURES}


def format_shares(texts: Sequence[str]) -> dict[str, float]:
    """Share of answers with each feature (0.0 for an empty list)."""
    if not texts:
        return {f: 0.0 for f in FEATURES}
    counts = Counter(f for t in texts for f, on in format_features(t).items() if on)
    return {f: counts[f] / len(texts) for f in FEATURES}


def format_compliance(texts: Sequence[str], reference: dict[str, float]) -> dict[str, Any]:
    """Shares of the answers vs the training data's shares; gap = mean absolute difference.

    A gap of 0 means the model formats as often as its training data did, whatever that is.
    """
    shares = format_shares(texts)
    gaps = {f: abs(shares[f] - reference.get(f, 0.0)) for f in FEATURES}
    return {
        "shares": shares,
        "reference": {f: reference.get(f, 0.0) for f in FEATURES},
        "gap": sum(gaps.values()) / len(FEATURES),
    }


def word_count(text: str) -> int:
    return len(WORD.findall(text))


def length_stats(texts: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Answer length in words vs the reference answers (ratio of medians; 1.0 is on target)."""
    lengths = [word_count(t) for t in texts]
    ref = [word_count(t) for t in references]
    out: dict[str, Any] = {
        "mean_words": mean(lengths) if lengths else 0.0,
        "median_words": median(lengths) if lengths else 0.0,
        "reference_median_words": median(ref) if ref else None,
    }
    out["ratio"] = out["median_words"] / out["reference_median_words"] if out["reference_median_words"] else None
    return out


def sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in SENTENCE_SPLIT.split(text) if len(s.strip()) > 3]


def ngram_repeats(words: Sequence[str], n: int) -> int:
    """How often the most common n-gram occurs."""
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


def repetition(text: str, sentence_limit: int = 3, ngram: int = 8, ngram_limit: int = 4) -> dict[str, Any]:
    """Detect a generation loop: one sentence more than `sentence_limit` times, or an 8-gram
    more than `ngram_limit` times (catches loops without sentence punctuation)."""
    sent_counts = Counter(sentences(text))
    top_sentence = max(sent_counts.values(), default=0)
    words = [w.lower() for w in WORD.findall(text)]
    top_ngram = ngram_repeats(words, ngram)
    distinct = len(set(words)) / len(words) if words else 1.0
    return {
        "max_sentence_repeats": top_sentence,
        "max_ngram_repeats": top_ngram,
        "distinct_word_ratio": distinct,
        "loop": top_sentence > sentence_limit or top_ngram > ngram_limit,
    }


def loop_rate(texts: Sequence[str]) -> float:
    return sum(repetition(t)["loop"] for t in texts) / len(texts) if texts else 0.0


def banned_rate(texts: Sequence[str], phrases: Sequence[str]) -> float:
    """Share of answers containing any banned phrase."""
    return sum(bool(banned_hits(t, phrases)) for t in texts) / len(texts) if texts else 0.0


def probe_check(probe: EvalQuestion, answer: str) -> dict[str, Any]:
    """A probe passes when the answer is sane (non-empty, no loop) and has every `must_include`
    entry (case-insensitive, whole words). `missing` says what it lacked, for the report."""
    if not answer.strip():
        return {"passed": False, "missing": ["(an empty answer)"]}
    if repetition(answer)["loop"]:
        return {"passed": False, "missing": ["(a repetition loop)"]}
    missing = missing_words(probe, answer)
    return {"passed": not missing, "missing": missing}


def probe_passes(probe: EvalQuestion, answer: str) -> bool:
    return bool(probe_check(probe, answer)["passed"])


def judge_verdict(first: str | None, second: str | None) -> str:
    """Combine a pairwise judge's two orders into 'tuned' | 'base' | 'tie'.

    `first` is the winner label when A=tuned, B=base; `second` when A=base, B=tuned. Only an
    answer that wins in both positions wins; a split verdict is position bias, hence a tie.
    """

    def norm(label: str | None, a_is: str, b_is: str) -> str:
        label = (label or "").strip().lower()
        return a_is if label == "a" else b_is if label == "b" else "tie"

    one, two = norm(first, "tuned", "base"), norm(second, "base", "tuned")
    return one if one == two else "tie"


def judge_summary(verdicts: Sequence[str]) -> dict[str, Any]:
    counts = Counter(verdicts)
    n = len(verdicts)
    return {
        "n": n,
        "tuned_wins": counts["tuned"],
        "base_wins": counts["base"],
        "ties": counts["tie"],
        "tuned_win_rate": counts["tuned"] / n if n else None,
    }


def json_safe(value: Any) -> Any:
    """Non-finite floats -> None, recursively: NaN/Infinity are not JSON (a diverged loss is NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def model_scores(
    answers: Sequence[str], references: Sequence[str], train_shares: dict[str, float], banned: Sequence[str]
) -> dict[str, Any]:
    """Every text score of one model's answers, in one dict (eval.json and the report use it)."""
    return {
        "format": format_compliance(answers, train_shares),
        "length": length_stats(answers, references),
        "loop_rate": loop_rate(answers),
        "banned_rate": banned_rate(answers, banned),
    }
