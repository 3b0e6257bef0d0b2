"""Progress where no bar can be drawn: plain periodic lines when stderr is a pipe (CI, `| tee`),
nothing with --quiet, the bar (and no plain lines) on a terminal, and run.log keeps them all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.pipeline.progress import Work, duration
from fakes.openai_server import FakeOpenAI
from helpers.pipeline import BASE_RECIPE, CASES, pipeline_model

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[")
PERIODIC = re.compile(r"^INFO +questions: asking for questions \d/3 \(\d+%\), \d+s elapsed(, ~\d+s left)?$", re.M)


def test_a_line_says_how_far_how_long_and_how_much_is_left() -> None:
    work = Work(120, "answers: answering")
    work.advance(40)
    work.started -= 72  # as if it began 72 s ago
    assert work.line() == "answers: answering 40/120 (33%), 1m12s elapsed, ~2m24s left"
    assert Work(None, "train: still running").line() == "train: still running, 0s elapsed"
    work.advance(80)
    assert work.line(finished=True) == "answers: answering 120/120 done in 1m12s"
    assert [duration(s) for s in (0, 59.4, 60, 3599, 3600, 7384)] == ["0s", "59s", "1m00s", "59m59s", "1h00m", "2h03m"]


def run_command(tmp_path: Path, *options: str, until: str = "answers", stderr: int | None = subprocess.PIPE) -> tuple:
    """`recipe [options] run --until UNTIL` against a slow fake server, stderr a pipe by default."""
    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECIPE_")}
    env.update(PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-test", RECIPE_PROGRESS_EVERY="0.25", COLUMNS="200")
    with FakeOpenAI(pipeline_model, latency=0.4, slots=1) as srv:
        recipe = tmp_path / "recipe.yaml"
        text = BASE_RECIPE.format(base_url=srv.base_url).replace("reask: 0", "reask: 0, max_concurrency: 1")
        recipe.write_text(text, encoding="utf-8")
        command = [sys.executable, "-m", "engine.cli", *options, "run", str(recipe), "--until", until]
        command += ["--runs-dir", str(tmp_path / "runs")]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, timeout=300)
    return done, next((tmp_path / "runs").glob("*/run.log")).read_text(encoding="utf-8")


def test_off_a_terminal_progress_is_plain_periodic_lines(tmp_path: Path) -> None:
    done, run_log = run_command(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("complete: ") and done.stdout.count("\n") == 1
    assert not ANSI.search(done.stderr), done.stderr
    assert len(PERIODIC.findall(done.stderr)) >= 2, done.stderr
    assert re.search(r"^INFO +questions: asking for questions 3/3 done in \d+s$", done.stderr, re.M), done.stderr
    assert re.search(r"^INFO +answers: answering \d/6 \(\d+%\), \d+s elapsed", done.stderr, re.M), done.stderr
    # in order: the lines of a bar come after its step starts and before the step's own summary
    questions = done.stderr[done.stderr.index("questions: running") : done.stderr.index("questions: 6 rows")]
    assert PERIODIC.search(questions)
    assert all(len(line) < 200 for line in done.stderr.splitlines())  # one line each, never wrapped
    assert len(re.findall(r"questions: asking for questions \d/3 \(", run_log)) >= 2  # run.log keeps them


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    done, run_log = run_command(tmp_path, "--quiet", until="questions")
    assert done.returncode == 0 and done.stdout.startswith("complete: ")
    assert done.stderr == ""
    assert re.search(r"questions: asking for questions \d/3 \(", run_log)  # the file still has them


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_a_terminal_the_bar_shows_it_and_no_plain_lines(tmp_path: Path) -> None:
    leader, follower = os.openpty()
    try:
        done, run_log = run_command(tmp_path, until="questions", stderr=follower)
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    terminal = seen.decode("utf-8", "replace")
    assert done.returncode == 0 and done.stdout.startswith("complete: ")
    assert done.stdout.count("\n") == 1  # the bar is drawn on stderr, the terminal; stdout is the result
    assert ANSI.search(terminal) and "questions: running" in terminal  # rich drew it
    assert not re.search(r"asking for questions \d/3 \(\d+%\)", terminal), terminal
    assert re.search(r"questions: asking for questions \d/3 \(", run_log)


def test_a_phase_without_a_bar_still_says_it_is_running(local_recipe: Path, paths, monkeypatch) -> None:  # noqa: ANN001
    """The slow test step has no bar (like loading a model or converting a GGUF)."""
    import engine.pipeline.plan
    from helpers.run_with_slow_step import steps_with_slow_step

    monkeypatch.setattr(engine.pipeline.plan, "available_steps", steps_with_slow_step)
    monkeypatch.setenv("SLOW_LOG", str(paths.runs_dir.parent / "slow.log"))
    monkeypatch.setenv("SLOW_DELAY", "0.4")
    monkeypatch.setenv("RECIPE_PROGRESS_EVERY", "0.2")
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["run", str(local_recipe), "--store", str(paths.store), "--runs-dir", str(paths.runs_dir)]
    )
    assert result.exit_code == 0, result.output
    beats = re.findall(r"^INFO +slowcount: still running, \d+s elapsed$", result.output, re.M)
    assert len(beats) >= 3, result.output  # 3 items x 0.4 s, a line every 0.2 s
    assert time.monotonic() - started < 60
    assert "still running" not in result.output.split("slowcount: 3 rows")[1]  # it stops with the step
    run_log = next(paths.runs_dir.glob("*/run.log")).read_text(encoding="utf-8")
    assert run_log.count("slowcount: still running") == len(beats)
