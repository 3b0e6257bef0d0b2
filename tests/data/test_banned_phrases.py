"""The default banned phrases: answers that give away their video source, without catching ordinary words.

A real channel's answers leaked "The video mentions...", "the talk" and "the material"; a creator
still says "talk to your doctor" and "the material in your fat cells".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data.quality import banned_hits, banned_reason
from engine.data.scores import banned_rate
from engine.data.settings import Filters
from engine.errors import RecipeInvalid
from engine.pipeline.recipes import load_recipe

DEFAULTS = Filters().banned_phrases

LEAKS = [
    "The video mentions that insulin drops during a fast.",
    "In this video, I explain why calories don't count.",
    "As explained in the talk, fasting is not starvation.",
    "According to the talk, autophagy starts after about a day.",
    "The talk does not go into detail about electrolytes.",
    "The material doesn't specify how long the fast should last.",
    "Based on the material, ketones become the main fuel.",
    "From the lecture, the key point is that insulin drives fat storage.",
    "The speaker explains that **insulin** is the main driver.",
    "The lecture discusses three reasons:\n\n- insulin\n- cortisol\n- sleep",
    "The transcript does not say whether coffee breaks a fast.",
    "This presentation highlights the role of cortisol.",
    "As mentioned earlier, fasting lowers insulin.",
    "The provided material covers only type 2 diabetes.",
    "Throughout the VIDEO,\n  the focus is on   insulin.",  # case and line breaks folded
]

LEGIT = [
    "Talk to your doctor before you start a fast longer than 24 hours.",
    "We talk about insulin because it is the master switch of fat storage.",
    "Fat cells store the material your body needs for lean times.",
    "Many of my patients talk about hunger as if it were constant. It comes in waves.",
    "A good talk with your pharmacist about metformin is worth the time.",
    "I have given many talks about the obesity code, and the message is always the same.",
    "Raw material for gluconeogenesis comes from glycerol and amino acids.",
    "Watch how your hunger changes over the first three days.",
    "People who video-call their fasting group stick with it longer.",
    "In my clinic, we start with a 16:8 schedule.",
]


@pytest.mark.parametrize("text", LEAKS)
def test_source_references_are_banned_by_default(text: str) -> None:
    assert banned_hits(text, DEFAULTS), text
    reason = banned_reason(text, DEFAULTS)
    assert reason is not None and reason.startswith("banned phrase: ")


@pytest.mark.parametrize("text", LEGIT)
def test_ordinary_uses_of_talk_and_material_are_kept(text: str) -> None:
    assert banned_hits(text, DEFAULTS) == [], text


def test_evaluation_counts_the_same_patterns() -> None:
    assert banned_rate([LEAKS[0], LEGIT[0], LEAKS[3], LEGIT[1]], DEFAULTS) == 0.5


def test_plain_phrases_stay_literal() -> None:
    # A phrase without `re:` is matched as text: its dots and question marks are not regex syntax.
    assert banned_hits("Ask: what? Really.", ["what? really."]) == ["what? really."]
    assert banned_hits("whatt really", ["what? really."]) == []
    assert banned_hits("See fig. 3", ["re:fig\\. \\d"]) == ["re:fig\\. \\d"]


def test_a_broken_pattern_is_a_recipe_error_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("So, insulin. " * 20, encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\ncreator:\n  name: A\nsources:\n  - type: local\n    path: t.txt\n"
        'filters:\n  banned_phrases:\n    - in the video\n    - "re:(the|a video"\n',
        encoding="utf-8",
    )
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(recipe)
    [problem] = info.value.problems
    assert (problem.line, problem.path) == (10, "filters.banned_phrases[1]")
    assert problem.message.startswith("bad regex 're:(the|a video': missing )")
    assert "drop the `re:` prefix" in problem.message
