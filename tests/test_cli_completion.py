"""Shell completion through click's real protocol: the process a shell starts, with the variables
it sets (_RECIPE_COMPLETE, COMP_WORDS, COMP_CWORD), and bash itself running the installed script."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("sources", "transcripts", "questions", "answers", "curate", "augment", "split", "train", "export", "evaluate")


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECIPE_", "_RECIPE_", "COMP_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def complete(line: str, cwd: Path, shell: str = "bash", **extra: str) -> list[tuple[str, str]]:
    """(type, value) pairs the program answers for the last word of `line` ('' after a space)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    env = environment(_RECIPE_COMPLETE=f"{shell}_complete", COMP_WORDS=line, COMP_CWORD=str(cword), **extra)
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli"], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    if shell == "zsh":  # type, value, help: three lines each
        lines = done.stdout.splitlines()
        return [(lines[i], lines[i + 1]) for i in range(0, len(lines), 3)]
    return [tuple(line.split(",", 1)) for line in done.stdout.splitlines() if line]  # type: ignore[misc]


def values(pairs: list[tuple[str, str]]) -> list[str]:
    return [value for kind, value in pairs if kind == "plain"]


def test_step_names_complete_for_until_and_force(tmp_path: Path) -> None:
    assert values(complete("recipe run r.yaml --until tr", tmp_path)) == ["transcripts", "train"]
    assert values(complete("recipe run r.yaml --until ", tmp_path)) == list(STEPS)
    assert values(complete("recipe plan r.yaml --force answers --force e", tmp_path)) == ["export", "evaluate"]
    assert values(complete("recipe run r.yaml --force=cu", tmp_path)) == ["curate"]
    assert values(complete("recipe run r.yaml --until nothing", tmp_path)) == []


def make_runs(runs_dir: Path, local_recipe: Path) -> str:
    """One real run folder (the engine's own manifest) and a few made by hand, one of them broken.
    Returns the real run's id."""
    result = CliRunner().invoke(
        main, ["-q", "run", str(local_recipe), "--until", "sources", "--runs-dir", str(runs_dir)]
    )
    assert result.exit_code == 0, result.output
    real = next(runs_dir.glob("*/manifest.json")).parent.name
    for run_id, recipe, created in (
        ("3f2a9c000001", "jane", "2026-01-02T10:00:00"),
        ("3f2b11000002", "maya", "2026-03-04T11:00:00"),
    ):
        (runs_dir / run_id).mkdir()
        (runs_dir / run_id / "manifest.json").write_text(json.dumps({"recipe": recipe, "created": created}))
    (runs_dir / "3f9bad000003").mkdir()
    (runs_dir / "3f9bad000003" / "manifest.json").write_text("{ half written")  # still a run folder
    (runs_dir / "3fnotarun").mkdir()  # no manifest: not a run
    (runs_dir / "3f-file.txt").write_text("not a folder")
    return real


def test_run_ids_complete_from_the_runs_folder(tmp_path: Path, local_recipe: Path) -> None:
    runs = tmp_path / "runs"
    real = make_runs(runs, local_recipe)
    newest_first = ["3f2b11000002", "3f2a9c000001", "3f9bad000003"]
    assert values(complete("recipe show 3f", tmp_path)) == newest_first
    assert values(complete("recipe show 3f2a", tmp_path)) == ["3f2a9c000001"]
    assert values(complete(f"recipe report {real[:3]}", tmp_path)) == [real]
    assert values(complete("recipe diff 3f2a9c000001 3f2b", tmp_path)) == ["3f2b11000002"]
    assert values(complete("recipe ask 3f2b", tmp_path)) == ["3f2b11000002"]
    assert sorted(values(complete("recipe show ", tmp_path))) == sorted([real, *newest_first])
    # zsh shows each run's recipe and date beside its id
    assert ("plain", "3f2a9c000001") in complete("recipe show 3f2a", tmp_path, shell="zsh")
    zsh = subprocess.run(
        [sys.executable, "-m", "engine.cli"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment(_RECIPE_COMPLETE="zsh_complete", COMP_WORDS="recipe show 3f2a", COMP_CWORD="2"),
        timeout=60,
    )
    assert zsh.stdout.splitlines() == ["plain", "3f2a9c000001", "jane 2026-01-02T10:00"]


def test_run_ids_follow_runs_dir_and_recipe_runs(tmp_path: Path, local_recipe: Path) -> None:
    elsewhere = tmp_path / "elsewhere runs"  # a space in the path
    make_runs(elsewhere, local_recipe)
    (tmp_path / "cwd").mkdir()
    cwd = tmp_path / "cwd"
    assert values(complete("recipe show 3f2b", cwd)) == []  # no runs/ here
    # an option before the argument is known when the argument is completed
    shutil.move(str(elsewhere), tmp_path / "other")
    assert values(complete(f"recipe show --runs-dir {tmp_path / 'other'} 3f2b", cwd)) == ["3f2b11000002"]
    assert values(complete("recipe show 3f2b", cwd, RECIPE_RUNS=str(tmp_path / "other"))) == ["3f2b11000002"]


def test_a_path_or_odd_prefix_falls_back_to_folder_completion(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    for prefix in ("runs/", "[", "*", "../", "x?y"):
        assert complete(f"recipe show {prefix}", tmp_path) == [("dir", prefix)], prefix


def test_recipe_files_still_complete_as_files(tmp_path: Path) -> None:
    assert complete("recipe run rec", tmp_path) == [("file", "rec")]


def test_completion_command_prints_clicks_own_script(tmp_path: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        ours = subprocess.run(
            [sys.executable, "-m", "engine.cli", "completion", shell],
            capture_output=True,
            text=True,
            env=environment(),
            timeout=60,
        )
        clicks = subprocess.run(
            [sys.executable, "-m", "engine.cli"],
            capture_output=True,
            text=True,
            env=environment(_RECIPE_COMPLETE=f"{shell}_source"),
            timeout=60,
        )
        assert ours.returncode == 0 and ours.stdout.strip() == clicks.stdout.strip() != "", shell
        assert "_RECIPE_COMPLETE" in ours.stdout
    bad = CliRunner().invoke(main, ["completion", "tcsh"])
    assert bad.exit_code == 2 and "'bash'" in bad.output


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_itself_completes_step_names_through_the_installed_script(tmp_path: Path) -> None:
    """What a user gets after `eval "$(recipe completion bash)"`: bash calls the `recipe` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "recipe"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m engine.cli "$@"\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    script = (
        'eval "$(recipe completion bash)"\n'
        "COMP_WORDS=(recipe run r.yaml --until tr); COMP_CWORD=4\n"
        "_recipe_completion recipe\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = environment(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["transcripts", "train"]
