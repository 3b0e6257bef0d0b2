"""Prompt templates hold only plain `{name}` placeholders, checked at load time.

Before: `{questions[99999]}`, `{questions!z}`, `{creator.__class__}` and `{x:>10}` passed
validation (str.format's parser accepts them) and failed, or leaked object internals, only when
the step rendered the prompt, after money was spent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import RecipeInvalid, TemplateError
from engine.pipeline.recipes import load_recipe
from engine.recipe.section import placeholders, prompt_fields

GOOD = "name: r\ncreator:\n  name: A\nsources:\n  - type: local\n    path: t.txt\n"


@pytest.mark.parametrize(
    ("template", "names"),
    [
        ("{transcript}", {"transcript"}),
        ('Reply {{"answers": [{{"n": 1}}]}} for {questions} in {transcript}', {"questions", "transcript"}),
        ("{{{creator}}}", {"creator"}),  # a literal brace, the placeholder, a literal brace
        ("no placeholders, }} and {{ literal", set()),
        ("{_private1}", {"_private1"}),
    ],
)
def test_plain_placeholders_and_literal_braces(template: str, names: set[str]) -> None:
    assert placeholders(template) == names
    template.format(**dict.fromkeys(names, "x"))  # what the steps do with it: never raises


@pytest.mark.parametrize(
    ("template", "offending"),
    [
        ("{questions[99999]}", "{questions[99999]}"),
        ("{questions!z}", "{questions!z}"),
        ("{questions!r}", "{questions!r}"),
        ("{creator.__class__.__mro__}", "{creator.__class__.__mro__}"),
        ("{transcript:>10}", "{transcript:>10}"),
        ("{transcript:{width}}", "{transcript:{width}"),
        ("{}", "{}"),
        ("{0}", "{0}"),
        ("{ creator }", "{ creator }"),
        ("{crea-tor}", "{crea-tor}"),
    ],
)
def test_anything_but_a_plain_name_is_rejected_by_name(template: str, offending: str) -> None:
    with pytest.raises(TemplateError, match="is not a plain {name}") as info:
        placeholders(template)
    assert f"placeholder {offending} " in str(info.value)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("You are {creator", "a '{' at character 9 ('You are {creator') is never closed"),
        ("JSON: {'a': 1}}", "placeholder {'a': 1} is not a plain {name}"),
        ("tail }", "a single '}' at character 6 ('tail }'); write '}}' for a literal brace"),
        ("{a}}}}", "a single '}' at character 6"),
    ],
)
def test_unbalanced_braces_say_where(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        placeholders(template)
    assert message in str(info.value)


def test_every_prompt_of_every_section_is_checked_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("So, insulin.")
    path = tmp_path / "r.yaml"
    path.write_text(
        GOOD
        + "prompts:\n"
        + "  answers: |\n    {questions[0]}\n    {transcript}\n"  # line 8
        + "  judge: '{a} {b!s}'\n"  # line 11
        + "split:\n  system_prompt: 'You are {creator:^20}'\n"  # line 13
        + "eval:\n  heldout: -1\n"  # line 15: a schema error does not hide the prompt errors
    )
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(path)
    found = [f"{p.line}:{p.col}: {p.path}: {p.message.split(':')[0]}" for p in info.value.problems]
    assert found == [
        "8:3: prompts.answers: placeholder {questions[0]} is not a plain {name}",
        "11:3: prompts.judge: placeholder {b!s} is not a plain {name}",
        "13:3: split.system_prompt: placeholder {creator",
        "15:3: eval.heldout: -1 is less than the minimum of 0",
    ]


def test_literal_braces_load_unchanged(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("So, insulin.")
    (tmp_path / "r.yaml").write_text(GOOD + "prompts:\n  system: '{{literal}} {creator}'\n")
    assert load_recipe(tmp_path / "r.yaml").prompts.system == "{{literal}} {creator}"


def test_the_default_prompts_follow_the_rule_they_enforce(tmp_path: Path) -> None:
    """Only what a recipe sets is checked at load time, so the defaults are checked here."""
    (tmp_path / "t.txt").write_text("So, insulin.")
    (tmp_path / "r.yaml").write_text(GOOD)
    defaults = list(prompt_fields(load_recipe(tmp_path / "r.yaml")))
    assert len(defaults) >= 10
    for path, template, declared in defaults:
        used = placeholders(template)
        assert used <= set(declared["allowed"]), path
        assert set(declared["required"]) <= used, path
