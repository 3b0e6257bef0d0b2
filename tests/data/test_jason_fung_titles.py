"""recipes/jason_fung.yaml's title filters on the channel's real title shapes.

The channel titles guest interviews "A Conversation with ..." or names the guest after "ft." /
"feat."; with only `\\binterview\\b` none of 9 interviews was excluded (issue 13).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.pipeline.recipes import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "jason_fung.yaml"

EXCLUDE = [
    "Fasting and Cancer ft. Dr. Thomas Seyfried",
    "A Conversation with Dr. Peter Attia",
    "A conversation with Megan Ramos | Fasting for Women",
    "Intermittent Fasting Myths feat. Megan Ramos",
    "The Truth About Keto (ft. Dr. Eric Westman)",
    "Reversing Type 2 Diabetes featuring Dr. Sarah Hallberg",
    "FT. DR. NADIR ALI - Heart Disease and Insulin",
    "Interview: Gut Health and Fasting",
    "Members only: Q&A on autophagy",
    "Fasting Q&A live",
]

KEEP = [
    "The Obesity Code Lecture Part 1",
    "Why Calories Don't Count",
    "Insulin Resistance Explained",
    "The Soft. Science of Hunger",  # "ft." inside a word is not a guest
    "An Amazing Feat: My Patient's 7-Day Fast",  # "feat" the noun, without the dot
    "Conversations About Food With My Patients",
    "How Fasting Affects the Heart",
    "Interviewing for a Night Shift Job? How to Fast Anyway",
]


@pytest.fixture(scope="module")
def title_exclude() -> tuple[str, ...]:
    [source] = load_recipe(RECIPE).sources
    return tuple(source.title_exclude)


def excluded(title: str, patterns: tuple[str, ...]) -> bool:
    # The sources step drops a video whose title matches any title_exclude regex (re.search).
    return any(re.search(p, title) for p in patterns)


@pytest.mark.parametrize("title", EXCLUDE)
def test_guest_interviews_and_live_streams_are_excluded(title: str, title_exclude: tuple[str, ...]) -> None:
    assert excluded(title, title_exclude)


@pytest.mark.parametrize("title", KEEP)
def test_his_own_lectures_are_kept(title: str, title_exclude: tuple[str, ...]) -> None:
    assert not excluded(title, title_exclude)
