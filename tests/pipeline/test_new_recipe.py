"""`recipe new`: a valid recipe for another creator, comments kept, fields to review marked."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.errors import RecipeError
from engine.pipeline.new_recipe import guess_creator, handle_from_url, new_recipe
from engine.pipeline.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "recipes" / "jason_fung.yaml"


def test_handle_and_creator_guess() -> None:
    assert handle_from_url("https://www.youtube.com/@janedoe/videos") == "@janedoe"
    assert handle_from_url("@jane.doe") == "@jane.doe"
    assert handle_from_url("https://www.youtube.com/channel/UC123") is None
    assert guess_creator("https://www.youtube.com/channel/UC123") == "UC123"


def test_new_recipe_replaces_creator_and_validates(tmp_path: Path) -> None:
    result = new_recipe("jane_doe", "https://www.youtube.com/@janedoe", SOURCE, "Dr. Jane Doe", tmp_path)
    recipe = load_recipe(result.path)
    assert recipe.name == "jane_doe"
    assert recipe.creator.name == "Dr. Jane Doe" and recipe.creator.handle == "@janedoe"
    assert [(s.type, s.url, s.title_exclude) for s in recipe.sources] == [
        ("youtube", "https://www.youtube.com/@janedoe", ())
    ]
    original = load_recipe(SOURCE)
    assert recipe.train == original.train and recipe.prompts.questions == original.prompts.questions
    text = result.path.read_text(encoding="utf-8")
    assert "Jason Fung" not in text and "drjasonfung" not in text
    assert "Dr. Jane Doe's lectures" in recipe.description  # the old name is replaced inside values
    assert "# short trials pick the best" in text  # round trip keeps the original's comments
    for path in ("creator.name", "sources", "eval.questions", "description", "split.system_prompt"):
        assert path in result.checks
    assert text.count("# CHECK:") == len(result.checks)


def test_new_recipe_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    new_recipe("a", "@x", SOURCE, None, tmp_path)
    with pytest.raises(RecipeError, match="exists"):
        new_recipe("a", "@x", SOURCE, None, tmp_path)
    new_recipe("a", "@y", SOURCE, None, tmp_path, force=True)
    again = load_recipe(tmp_path / "a.yaml")
    assert again.creator.name == "y" and again.sources[0].url == "https://www.youtube.com/@y"
    with pytest.raises(RecipeError, match="must be letters"):
        new_recipe("bad name", "@x", SOURCE, None, tmp_path)


def test_cli_new_from_demo(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "new",
            "maya2",
            "--channel",
            "https://www.youtube.com/@maya",
            "--from",
            str(ROOT / "recipes" / "demo.yaml"),
            "--dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "review the fields marked CHECK" in result.output and "eval.questions" in result.output
    recipe = load_recipe(tmp_path / "maya2.yaml")
    assert recipe.sources[0].type == "youtube" and recipe.creator.name == "maya"
    missing = CliRunner().invoke(main, ["new", "x", "--channel", "@x", "--from", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "no such recipe" in missing.output
