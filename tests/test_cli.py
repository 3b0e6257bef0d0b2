"""The CLI is a thin shell: every command works through CliRunner on real files."""

from __future__ import annotations

import json
import os
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


STEPS = ("sources", "transcripts", "questions", "answers", "curate", "augment", "split", "train", "export", "evaluate")


def test_unknown_step_is_a_usage_error_that_lists_the_steps(local_recipe: Path, paths) -> None:  # noqa: ANN001
    where = ["--store", str(paths.store), "--runs-dir", str(paths.runs_dir)]
    for args in (
        ["run", str(local_recipe), "--until", "trian", *where],
        ["run", str(local_recipe), "--force", "answers", "--force", "Train", *where],  # names are exact
        ["plan", str(local_recipe), "--force", "", *where],
        ["plan", str(local_recipe), "--until", "split;rm -rf ~", *where],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "Usage: " in result.output, (args, result.output)
        assert "Invalid value for '--" in result.output and all(f"'{s}'" in result.output for s in STEPS)
    assert not paths.runs_dir.exists()  # refused before anything was opened or planned


def test_dash_h_is_help_for_the_group_and_every_command() -> None:
    assert CliRunner().invoke(main, ["-h"]).output.startswith("Usage: ")
    groups = [([], main), *(([name], cmd) for name, cmd in main.commands.items() if hasattr(cmd, "commands"))]
    for prefix, group in groups:
        for name in group.commands:  # type: ignore[attr-defined]
            result = CliRunner().invoke(main, [*prefix, name, "-h"])
            assert result.exit_code == 0 and result.output.startswith("Usage: "), (prefix, name, result.output)
            assert "-h, --help" in result.output


def test_complete_is_said_once_at_the_end_of_a_run(local_recipe: Path, paths) -> None:  # noqa: ANN001
    """Not --quiet: the console log (stderr) and the result line (stdout) together."""
    where = ["--store", str(paths.store), "--runs-dir", str(paths.runs_dir)]
    for _ in range(2):  # a run that computes, then one that is all cached
        result = CliRunner().invoke(main, ["run", str(local_recipe), "--until", "transcripts", *where])
        assert result.exit_code == 0, result.output
        assert result.output.count("complete:") == 1, result.output
        assert result.output.rstrip().splitlines()[-1].startswith("complete: ")
    run_log = next(paths.runs_dir.glob("*/run.log")).read_text(encoding="utf-8")
    assert run_log.count(" complete: ") == 2  # the run log still records each end


def test_missing_recipe_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "no such recipe file" in result.output


def test_schema_prints_json() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert json.loads(result.output)["title"] == "recipe"


# -- the error edge: one handler on the group, the same for every command -----------------------


def test_a_recipe_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and result.output.startswith(f"error: {tmp_path / 'nope.yaml'}: no such recipe")
    assert "Traceback" not in result.output and "--debug" not in result.output


def test_an_invalid_recipe_prints_its_problems_as_they_are(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: [unclosed\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 1 and result.output.startswith(f"{recipe}:2:1: YAML syntax error")
    assert result.output.rstrip().endswith("1 problem found")


def test_a_failed_step_names_the_commands_to_run_next(local_recipe: Path, paths, monkeypatch) -> None:  # noqa: ANN001
    from engine.steps import transcripts

    def boom(ctx, inputs, cfg):  # noqa: ANN001, ANN202
        raise OSError("disk on fire")

    monkeypatch.setattr(transcripts, "run", boom)
    result = CliRunner().invoke(
        main,
        [
            "--quiet",
            "run",
            str(local_recipe),
            "--until",
            "transcripts",
            "--store",
            str(paths.store),
            "--runs-dir",
            str(paths.runs_dir),
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: step 'transcripts'") and "OSError: disk on fire" in result.output
    run_id = next(paths.runs_dir.glob("*/manifest.json")).parent.name
    assert f"recipe run {local_recipe} --force transcripts" in result.output
    assert result.output.rstrip().splitlines()[-1].strip().startswith(f"recipe show {run_id}")


def test_an_unexpected_error_is_one_line_with_a_hint(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import engine.inspect.runs

    def broken(runs_dir: Path) -> list:
        raise ValueError("manifest.json\nis not JSON")

    monkeypatch.setattr(engine.inspect.runs, "list_runs", broken)
    result = CliRunner().invoke(main, ["runs", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: ValueError: manifest.json is not JSON",
        "rerun with --debug for the traceback",
    ]


def test_schema_is_behind_the_same_edge(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where a folder should be")
    result = CliRunner().invoke(main, ["schema", "--write", str(tmp_path / "taken" / "recipe.schema.json")])
    assert result.exit_code == 1 and result.output.startswith("error: FileExistsError: ")
    assert "Traceback" not in result.output


def test_debug_lets_the_exception_through(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import engine.inspect.runs

    def broken(runs_dir: Path) -> list:
        raise ValueError("not JSON")

    monkeypatch.setattr(engine.inspect.runs, "list_runs", broken)
    for args, env in ((["--debug", "runs"], {}), (["runs"], {"RECIPE_DEBUG": "1"})):
        result = CliRunner().invoke(main, [*args, "--runs-dir", str(tmp_path)], env=env)
        assert result.exit_code == 1 and isinstance(result.exception, ValueError), args
        assert "rerun with --debug" not in result.output


def test_ctrl_c_says_how_to_resume_and_exits_130(local_recipe: Path, monkeypatch) -> None:  # noqa: ANN001
    import engine.pipeline.runner

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.pipeline.runner, "run_recipe", interrupted)
    result = CliRunner().invoke(main, ["run", str(local_recipe)])
    assert result.exit_code == 130
    assert result.output.strip() == "interrupted; finished steps are kept, run the same command to resume"


def test_usage_errors_keep_clicks_exit_2() -> None:
    for args in (["run"], ["schema", "--bogus"], ["no-such-command"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "Usage:" in result.output, args


def test_the_installed_command_prints_no_traceback_unless_debug(tmp_path: Path) -> None:
    """The real process: what a user sees on stderr, and the exit code the shell gets."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "engine.cli", "validate", str(tmp_path / "nope.yaml")]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("RECIPE_DEBUG", None)
    plain = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 1 and plain.stderr.startswith(f"error: {tmp_path / 'nope.yaml'}: no such recipe")
    assert "Traceback" not in plain.stderr
    debug = subprocess.run(
        command, check=False, capture_output=True, text=True, env={**env, "RECIPE_DEBUG": "1"}, timeout=120
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("engine.errors.RecipeError: ")


def test_a_developers_recipe_variables_never_reach_a_test() -> None:
    assert not [n for n in os.environ if n.startswith("RECIPE_") and n != "RECIPE_BLAS"]
