"""`recipe new`: a valid recipe for another creator, comments kept, fields to review marked."""

from __future__ import annotations

import json
import shutil
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


# -- the editor's schema line: it must resolve from where the new file is ------------------------


def schema_of(recipe: Path) -> Path:
    """The file the recipe's `# yaml-language-server: $schema=` line names, resolved as an editor
    does: relative to the recipe's own folder."""
    first = recipe.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), first
    value = first.split("$schema=", 1)[1]
    assert value.strip() == value and " " not in value
    return (recipe.parent / value).resolve()


def test_schema_line_resolves_from_a_dir_in_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository: the line must not depend on where it was run
    for out_dir in (tmp_path / "elsewhere" / "deep", Path("relative-dir"), tmp_path):
        result = new_recipe("maya", "@maya", SOURCE, None, out_dir, force=True)
        assert schema_of(result.path) == (ROOT / "schemas" / "recipe.schema.json").resolve(), out_dir
        assert result.schema_written is None


def test_schema_is_written_beside_the_recipe_when_there_is_none_to_point_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after `pip install`: the source recipe's line points nowhere and there is no schemas/."""
    import jsonschema
    from ruamel.yaml import YAML

    from engine.pipeline.recipes import schema_text

    alone = tmp_path / "my recipes"  # a space: a relative path through it would be cut by some editors
    alone.mkdir()
    shutil.copy(ROOT / "recipes" / "demo.yaml", alone / "demo.yaml")
    monkeypatch.chdir(alone)
    result = CliRunner().invoke(main, ["new", "maya", "--channel", "@maya", "--from", "demo.yaml", "--dir", "out"])
    assert result.exit_code == 0, result.output
    written = alone / "out" / "recipe.schema.json"
    assert f"wrote {Path('out') / 'recipe.schema.json'}" in result.output
    assert schema_of(alone / "out" / "maya.yaml") == written.resolve()
    assert written.read_text(encoding="utf-8") == schema_text()
    data = YAML(typ="safe").load((alone / "out" / "maya.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(data, json.loads(written.read_text(encoding="utf-8")))  # an editor's check passes


def test_a_schema_url_is_kept_and_a_dead_path_falls_back_to_the_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / "recipes" / "demo.yaml").read_text(encoding="utf-8").split("\n", 1)[1]
    url = "https://example.org/schemas/recipe.schema.json"
    (tmp_path / "from_url.yaml").write_text(f"# yaml-language-server: $schema={url}\n{text}", encoding="utf-8")
    (tmp_path / "dead.yaml").write_text(f"# yaml-language-server: $schema=nowhere/x.json\n{text}", encoding="utf-8")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "recipe.schema.json").write_text("{}", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a project of the user's, with its own schemas/
    kept = new_recipe("a", "@a", tmp_path / "from_url.yaml", None, tmp_path / "out")
    assert kept.path.read_text(encoding="utf-8").startswith(f"# yaml-language-server: $schema={url}\n")
    found = new_recipe("b", "@b", tmp_path / "dead.yaml", None, tmp_path / "out" / "sub")
    assert schema_of(found.path) == (tmp_path / "schemas" / "recipe.schema.json").resolve()
    assert not (tmp_path / "out" / "recipe.schema.json").exists()
