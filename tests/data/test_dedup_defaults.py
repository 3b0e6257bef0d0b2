"""The default dedup scorer on real-shaped question pairs (issue 13: a real health channel's Q&A).

token_set_ratio, the old default, scores 100 when one question's words are (almost) a subset of
the other's, so questions about different things that share a long frame collided.
"""

from __future__ import annotations

import pytest

from engine.data.dedup import find_duplicates
from engine.data.settings import Dedup, Filters

# Distinct questions that token_set_ratio >= 85 merged; each pair is about two different things.
DISTINCT = [
    (
        "What's the difference between fasting and starvation?",
        "What's the difference between white fat and brown fat, and does fasting change it?",
    ),
    (
        "What is the difference between fasting and starvation?",
        "What is the difference between white fat and brown fat during fasting?",
    ),
    ("What happens to insulin levels during fasting?", "What happens to testosterone levels during fasting?"),
    ("Does fasting lower insulin levels?", "Does fasting lower testosterone levels?"),
    ("How does fasting affect insulin levels?", "How does fasting affect testosterone levels in men?"),
    (
        "Do calcium supplements raise the risk of kidney stones?",
        "Do calcium supplements raise the risk of a heart attack or stroke?",
    ),
    (
        "What is the connection between calcium and kidney stones?",
        "What is the connection between calcium supplements and heart attack or stroke?",
    ),
]

# The same question asked twice in other words, as an LLM repeats itself across videos.
PARAPHRASES = [
    ("Why doesn't counting calories work for weight loss?", "Why does counting calories not work for weight loss?"),
    ("Is breakfast really the most important meal of the day?", "Is breakfast the most important meal of the day?"),
    ("What is insulin resistance?", "What exactly is insulin resistance?"),
    ("Does fasting cause muscle loss?", "Does fasting cause you to lose muscle?"),
    ("Can you drink coffee while fasting?", "Can you drink coffee while you are fasting?"),
    ("What breaks a fast?", "what BREAKS a fast??"),
]


def test_the_recipe_default_is_token_sort_ratio_at_85() -> None:
    dedup = Filters().dedup
    assert (dedup.scorer, dedup.threshold) == ("token_sort_ratio", 85)
    description = Dedup.model_fields["scorer"].description or ""
    assert "96% precision" in description and "~75% precision" in description  # the measured trade-off


@pytest.mark.parametrize(("first", "second"), DISTINCT)
def test_distinct_real_questions_are_not_duplicates(first: str, second: str) -> None:
    dedup = Filters().dedup
    assert find_duplicates([first, second], [50, 50], scorer=dedup.scorer, threshold=dedup.threshold) == []
    assert find_duplicates([first, second], [50, 50]) == []  # the function's own default agrees


@pytest.mark.parametrize(("first", "second"), PARAPHRASES)
def test_paraphrases_are_still_duplicates(first: str, second: str) -> None:
    dedup = Filters().dedup
    found = find_duplicates([first, second], [40, 60], scorer=dedup.scorer, threshold=dedup.threshold)
    assert [(d.index, d.kept) for d in found] == [(0, 1)]  # the better-scored copy stays
    assert found[0].similarity >= 85


def test_fasting_vs_starvation_survives_once() -> None:
    """The issue's case: both copies of the question vanished against a white/brown fat question."""
    questions = [DISTINCT[0][0], DISTINCT[1][0], DISTINCT[0][1], DISTINCT[1][1]]
    kept = set(range(4)) - {d.index for d in find_duplicates(questions, [50, 60, 50, 60])}
    assert [questions[i] for i in sorted(kept)] == [DISTINCT[1][0], DISTINCT[1][1]]


def test_a_mixed_batch_drops_only_the_paraphrases() -> None:
    pairs = [p for i, p in enumerate(DISTINCT) if i != 1] + PARAPHRASES  # DISTINCT[1] rewords DISTINCT[0]
    questions = [q for pair in pairs for q in pair]
    dups = find_duplicates(questions, [50.0] * len(questions))
    first_paraphrase = 2 * (len(DISTINCT) - 1)
    assert sorted(d.index for d in dups) == list(range(first_paraphrase + 1, len(questions), 2))


def test_the_old_scorer_stays_available() -> None:
    aggressive = Dedup(scorer="token_set_ratio")
    first, second = DISTINCT[2]
    assert find_duplicates([first, second], [50, 50], scorer=aggressive.scorer, threshold=aggressive.threshold)
