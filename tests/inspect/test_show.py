"""`recipe show` names what failed: every failed or skipped file with its reason, not only counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main
from engine.pipeline.runner import Paths, run_recipe
from engine.steps.base import RunOptions

CASES = Path(__file__).resolve().parents[1] / "cases"


def _run_over_a_messy_folder(tmp_path: Path, paths: Paths) -> str:
    folder = tmp_path / "inbox"
    shutil.copytree(CASES / "engine_transcripts", folder)
    for name in ("events_int.json3", "latin1.txt", "slides.pdf", "folder.txt"):
        source = CASES / "hostile_transcripts" / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: s\ncreator:\n  name: Dr. Test\nsources:\n  - type: local\n    path: inbox\n")
    return run_recipe(recipe, paths, until="transcripts", options=RunOptions(quiet=True)).run_dir.name


def test_show_lists_failed_and_skipped_files_by_name(tmp_path: Path, paths: Paths) -> None:
    run_id = _run_over_a_messy_folder(tmp_path, paths)
    shown = CliRunner().invoke(main, ["show", run_id, "--runs-dir", str(paths.runs_dir)])
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert 'failed   events_int: malformed file: inbox/events_int.json3: "events" is a number, expected a list' in out
    assert "failed   latin1: malformed file: inbox/latin1.txt: not UTF-8 text" in out
    assert "skipped  inbox/slides.pdf: not a transcript format (.pdf)" in out
    assert "skipped  inbox/folder.txt: a folder, not a file" in out

    as_json = json.loads(CliRunner().invoke(main, ["show", run_id, "--runs-dir", str(paths.runs_dir), "--json"]).output)
    failed = {f["name"]: f["reason"] for f in as_json["failures"]["transcripts"]}
    assert set(failed) == {"events_int", "latin1"}
    assert {f["name"] for f in as_json["failures"]["sources"]} == {"inbox/slides.pdf", "inbox/folder.txt"}


def test_show_cuts_a_long_list_and_says_how_many_more(tmp_path: Path, paths: Paths) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    for i in range(13):
        (folder / f"empty{i:02}.vtt").write_bytes(b"")
    (folder / "good.txt").write_text("One real paragraph of a lecture about fasting.\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: s\ncreator:\n  name: Dr. Test\nsources:\n  - type: local\n    path: inbox\n")
    run_id = run_recipe(recipe, paths, until="transcripts", options=RunOptions(quiet=True)).run_dir.name
    out = CliRunner().invoke(main, ["show", run_id, "--runs-dir", str(paths.runs_dir)]).output
    assert "failed   empty09: malformed file: inbox/empty09.vtt: empty file" in out
    assert "empty10" not in out and "... and 3 more (recipe show --json lists them all)" in out
