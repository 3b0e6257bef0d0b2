"""Adding a step takes a module, its config class and one registry line: nothing else.

tests/helpers/toy_step.py is registered here (between transcripts and questions) and must show
up in the generated schema, validation, `recipe plan`, `recipe run`, `recipe show` and
`recipe diff` without any other edit. docs/adding-a-step.md walks through the same step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import engine.steps
from engine.cli import main
from engine.pipeline.recipes import json_schema

TOY = "helpers.toy_step"


@pytest.fixture()
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    modules = list(engine.steps.STEP_MODULES)
    modules.insert(modules.index("engine.steps.transcripts") + 1, TOY)  # the one registry line
    monkeypatch.setattr(engine.steps, "STEP_MODULES", tuple(modules))


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def with_toy(recipe: Path, settings: str) -> Path:
    recipe.write_text(recipe.read_text(encoding="utf-8") + f"toy:\n{settings}", encoding="utf-8")
    return recipe


def test_the_toy_step_is_in_the_generated_schema(toy_registered: None) -> None:
    schema = json_schema()
    toy = schema["$defs"]["ToySettings"]
    assert schema["properties"]["toy"]["$ref"] == "#/$defs/ToySettings"
    assert toy["properties"]["min_words"] == {
        "default": 1,
        "description": "Chunks with fewer words are kept as 'skipped' rows.",
        "minimum": 0,
        "type": "integer",
    }
    assert toy["additionalProperties"] is False
    assert "toy" in json.loads(cli("schema"))["properties"]


def test_the_toy_steps_settings_are_validated_with_positions(toy_registered: None, local_recipe: Path) -> None:
    with_toy(local_recipe, "  min_words: -2\n  max_word: 3\n")
    result = CliRunner().invoke(main, ["validate", str(local_recipe)])
    assert result.exit_code == 1
    assert "toy.min_words: -2 is less than the minimum of 0" in result.output
    assert "toy.max_word: unknown field 'max_word'; did you mean 'max_words'?" in result.output
    bounds = local_recipe.with_name("bounds.yaml")
    bounds.write_text(local_recipe.read_text().split("toy:")[0] + "toy:\n  min_words: 9\n  max_words: 3\n")
    result = CliRunner().invoke(main, ["validate", str(bounds)])
    assert result.exit_code == 1 and "toy.min_words: 9 is more than max_words (3)" in result.output


def test_the_toy_step_plans_runs_shows_and_diffs(toy_registered: None, local_recipe: Path, tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    with_toy(local_recipe, "  min_words: 1\n")
    plan = cli("plan", str(local_recipe), "--until", "toy", "--runs-dir", runs)
    assert [line.split()[0] for line in plan.splitlines() if line.strip()][:3] == ["sources", "transcripts", "toy"]

    first = cli("-q", "run", str(local_recipe), "--until", "toy", "--runs-dir", runs)
    assert "3 step(s) ran: sources, transcripts, toy" in first
    local_recipe.write_text(local_recipe.read_text().replace("min_words: 1", "min_words: 10000"))
    second = cli("-q", "run", str(local_recipe), "--until", "toy", "--runs-dir", runs)
    assert "1 step(s) ran: toy; 2 cached" in second  # only the toy reran
    first_id, second_id = (Path(out.split()[1]).name for out in (first, second))

    show = cli("show", second_id, "--runs-dir", runs)
    assert any(line.split()[:3] == ["toy", "ran", "3"] for line in show.splitlines()), show
    assert "toy: chunks=3" in show and "skipped: word count" in show  # its metrics and drop reasons
    diff = cli("diff", first_id, second_id, "--runs-dir", runs)
    assert "toy.min_words: 1 -> 10000" in diff
    assert any(line.split()[:3] == ["rows.toy", "3", "3"] for line in diff.splitlines()), diff
