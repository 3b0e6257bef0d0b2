"""The CLI is a thin shell: every command works through CliRunner on real files."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main


def invoke(*args: str, paths=None):  # noqa: ANN001, ANN201
    extra = ["--store", str(paths.store), "--runs-dir", str(paths.runs_dir)] if paths else []
    return CliRunner().invoke(main, ["--quiet", *args[:1], *args[1:], *extra], catch_exceptions=False)


def test_every_command_has_help_with_an_example() -> None:
    for command in main.commands:
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Example: recipe" in result.output, command


def test_run_then_plan_runs_show_gc(local_recipe: Path, paths) -> None:  # noqa: ANN001
    result = invoke("run", str(local_recipe), "--until", "transcripts", paths=paths)
    assert result.exit_code == 0, result.output
    assert "2 step(s) ran" in result.output

    planned = invoke("plan", str(local_recipe), "--until", "transcripts", paths=paths)
    assert planned.output.count("cached") == 2

    listed = CliRunner().invoke(main, ["runs", "--runs-dir", str(paths.runs_dir)])
    run_id = listed.output.split()[0]
    assert "local-test" in listed.output and "complete" in listed.output

    shown = CliRunner().invoke(main, ["show", run_id[:6], "--runs-dir", str(paths.runs_dir), "--json"])
    assert json.loads(shown.output)["manifest"]["status"] == "complete"

    kept = invoke("gc", paths=paths)
    assert "dropped 0 table(s)" in kept.output


def test_gc_drops_tables_no_run_references(local_recipe: Path, paths) -> None:  # noqa: ANN001
    import shutil

    invoke("run", str(local_recipe), "--until", "transcripts", paths=paths)
    for run_dir in paths.runs_dir.glob("*/manifest.json"):
        shutil.rmtree(run_dir.parent)
    result = invoke("gc", paths=paths)
    assert "dropped 2 table(s)" in result.output
    again = invoke("run", str(local_recipe), "--until", "transcripts", paths=paths)
    assert "2 step(s) ran" in again.output


def test_unknown_step_is_a_clear_error(local_recipe: Path, paths) -> None:  # noqa: ANN001
    result = CliRunner().invoke(main, ["run", str(local_recipe), "--until", "trian",
                                       "--store", str(paths.store), "--runs-dir", str(paths.runs_dir)])
    assert result.exit_code == 1 and "no such step" in result.output


def test_missing_recipe_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "no such recipe file" in result.output


def test_schema_prints_json() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert json.loads(result.output)["title"] == "recipe"
