"""Every broken recipe in tests/cases/recipes/ reports its exact line, column, field and message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from engine.cli import main
from engine.errors import RecipeInvalid
from engine.pipeline.recipes import load_recipe

CASES = Path(__file__).parents[1] / "cases" / "recipes"
BROKEN = sorted(CASES.glob("*.yaml"))


def expectations(path: Path) -> list[str]:
    # Some cases are not UTF-8 on purpose; their `# expect:` lines are ASCII.
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [m.group(1) for m in re.finditer(r"^# expect: (.+)$", text, re.M)]


def test_corpus_is_large_enough() -> None:
    assert len(BROKEN) >= 25


@pytest.mark.parametrize("case", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_recipe_reports_line_and_field(case: Path) -> None:
    expected = expectations(case)
    assert expected, f"{case.name} has no '# expect:' line"
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(case)
    reported = [str(p) for p in info.value.problems]
    for want in expected:
        assert any(line.startswith(f"{case}:{want}") for line in reported), (want, reported)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(CASES / "many_problems.yaml")
    assert len(info.value.problems) == 4


@pytest.mark.parametrize("case", BROKEN, ids=[p.stem for p in BROKEN])
def test_cli_exits_1_with_only_located_lines(case: Path) -> None:
    """`recipe validate` on every broken recipe: exit 1, and each line is `file:line:col: ...`."""
    result = CliRunner().invoke(main, ["validate", str(case)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    *problems, count = result.output.strip().splitlines()
    assert problems and re.fullmatch(r"\d+ problems? found", count), result.output
    for line in problems:
        assert re.match(rf"{re.escape(str(case))}:\d+:\d+: \S", line), line


def test_defaults_fill_a_minimal_recipe(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("So, insulin.")
    (tmp_path / "r.yaml").write_text("name: r\ncreator:\n  name: A\nsources:\n  - type: local\n    path: t.txt\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.train.lora.rank == 8
    assert recipe.filters.dedup.threshold == 85
    assert recipe.split.by == "video"
    assert recipe.sources[0].format == "auto"
    with pytest.raises(ValidationError, match="frozen"):
        recipe.train.lora.rank = 4  # type: ignore[misc]  # frozen


def test_per_pass_llm_override_inherits_the_rest(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("So, insulin.")
    (tmp_path / "r.yaml").write_text(
        "name: r\ncreator: {name: A}\nsources: [{type: local, path: t.txt}]\n"
        "llm:\n  model: openai/big\n  temperature: 0.2\n  passes:\n    augment: {model: openai/small}\n"
    )
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.llm.for_pass("augment").model == "openai/small"
    assert recipe.llm.for_pass("augment").temperature == 0.2
    assert recipe.llm.for_pass("answers").model == "openai/big"


def test_real_recipes_validate() -> None:
    for path in sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml")):
        load_recipe(path)
