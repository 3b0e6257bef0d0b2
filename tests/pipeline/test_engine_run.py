"""The engine end to end on real steps and real DuckDB files: caching, run folders, locking, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from engine.errors import StepFailed, StoreBusy
from engine.pipeline.runner import Paths, plan_recipe, run_recipe
from engine.pipeline.store import Store
from engine.steps.base import RunOptions

ROOT = Path(__file__).resolve().parents[2]
QUIET = RunOptions(quiet=True)


def run(recipe: Path, paths: Paths, **kwargs):  # noqa: ANN201
    return run_recipe(recipe, paths, until="transcripts", options=QUIET, **kwargs)


def test_second_run_executes_zero_steps(local_recipe: Path, paths: Paths) -> None:
    first = run(local_recipe, paths)
    assert first.executed == ["sources", "transcripts"]
    second = run(local_recipe, paths)
    assert second.executed == []
    assert second.run_dir == first.run_dir


def test_changing_one_field_reruns_only_downstream(local_recipe: Path, paths: Paths) -> None:
    first = run(local_recipe, paths)
    with local_recipe.open("a") as f:
        f.write("transcripts:\n  clean:\n    strip_cues: false\n")
    second = run(local_recipe, paths)
    assert second.executed == ["transcripts"]
    assert second.run_dir != first.run_dir


def test_editing_transcript_bytes_invalidates_it(local_recipe: Path, paths: Paths) -> None:
    first = run(local_recipe, paths)
    vtt = local_recipe.parent / "transcripts" / "insulin.vtt"
    vtt.write_text(vtt.read_text().replace("storage hormone", "master storage hormone"))
    second = run(local_recipe, paths)
    assert second.executed == ["sources", "transcripts"]
    with duckdb.connect(str(second.run_dir / "data.duckdb"), read_only=True) as con:
        texts = [r[0] for r in con.execute("SELECT text FROM transcripts").fetchall()]
    assert any("master storage hormone" in t for t in texts)
    assert first.run_dir != second.run_dir


def test_touching_a_file_without_changing_bytes_keeps_cache(local_recipe: Path, paths: Paths) -> None:
    run(local_recipe, paths)
    os.utime(local_recipe.parent / "transcripts" / "insulin.vtt", (1, 1))
    assert run(local_recipe, paths).executed == []


def test_force_reruns_step_and_downstream(local_recipe: Path, paths: Paths) -> None:
    run(local_recipe, paths)
    assert run(local_recipe, paths, force=("sources",)).executed == ["sources", "transcripts"]
    assert run(local_recipe, paths, force=("transcripts",)).executed == ["transcripts"]


def test_plan_reports_cached_and_to_run(local_recipe: Path, paths: Paths) -> None:
    before = plan_recipe(local_recipe, paths, until="transcripts")
    assert [s.status for s in before.steps] == ["to run", "to run"]
    run(local_recipe, paths)
    after = plan_recipe(local_recipe, paths, until="transcripts")
    assert [s.status for s in after.steps] == ["cached", "cached"]
    assert after.run_id == before.run_id


def test_run_folder_is_self_contained(local_recipe: Path, paths: Paths) -> None:
    result = run(local_recipe, paths)
    folder = result.run_dir
    assert (folder / "recipe.yaml").read_bytes() == local_recipe.read_bytes()
    resolved = json.loads((folder / "resolved.json").read_text())
    assert resolved["train"]["lora"]["rank"] == 8  # defaults filled in
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {s["status"] for s in manifest["steps"].values()} == {"ran"}
    assert manifest["versions"]["python"]
    assert manifest["steps"]["transcripts"]["rows"] == 3
    with duckdb.connect(str(folder / "data.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"sources", "transcripts"} <= tables
    assert "transcripts: running" in (folder / "run.log").read_text()


def test_catalog_records_every_step(local_recipe: Path, paths: Paths) -> None:
    run(local_recipe, paths)
    with Store(paths.store) as store:
        catalog = store.catalog()
    assert [e["step"] for e in catalog] == ["sources", "transcripts"]
    entry = catalog[1]
    assert entry["rows"] == 3 and entry["engine_version"] and json.loads(entry["upstream"])["sources"]
    assert entry["table_name"] == f"transcripts_{entry['key'][:16]}"


def test_second_process_gets_store_busy(local_recipe: Path, paths: Paths) -> None:
    with Store(paths.store):
        with pytest.raises(StoreBusy, match=f"in use by pid {os.getpid()}"):
            run(local_recipe, paths)


def test_wait_queues_behind_the_lock(local_recipe: Path, paths: Paths) -> None:
    holder = Store(paths.store)
    threading.Timer(0.7, holder.close).start()
    started = time.monotonic()
    result = run(local_recipe, paths, wait=True)
    assert result.status == "complete" and time.monotonic() - started >= 0.6


def test_failed_step_is_recorded_and_next_run_resumes(
    local_recipe: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.steps import transcripts

    def boom(ctx, inputs, cfg):  # noqa: ANN001, ANN202
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(transcripts, "run", boom)
    with pytest.raises(StepFailed, match="disk on fire") as info:
        run(local_recipe, paths)
    manifests = list(paths.runs_dir.glob("*/manifest.json"))
    manifest = json.loads(manifests[0].read_text())
    # the message ends with what to do next, spelled for this recipe and this run
    commands = [line.split("  #")[0].strip() for line in str(info.value).splitlines()[-3:]]
    assert commands == [
        f"recipe run {local_recipe}",
        f"recipe run {local_recipe} --force transcripts",
        f"recipe show {manifest['run_id']}",
    ]
    assert manifest["status"] == "failed" and manifest["failed_step"] == "transcripts"
    assert "disk on fire" in manifest["steps"]["transcripts"]["error"]
    monkeypatch.undo()
    assert run(local_recipe, paths).executed == ["transcripts"]


def _slow_run(recipe: Path, paths: Paths, log: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "SLOW_LOG": str(log), "SLOW_DELAY": str(delay), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.run_with_slow_step", str(recipe), str(paths.runs_dir)], env=env, cwd=ROOT
    )


def test_killed_run_resumes_with_nothing_lost(local_recipe: Path, paths: Paths, tmp_path: Path) -> None:
    log = tmp_path / "computed.log"
    proc = _slow_run(local_recipe, paths, log, delay=1.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(log.read_text().splitlines() if log.exists() else []) < 1:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before_kill = {line.split()[1] for line in log.read_text().splitlines()}
    assert 1 <= len(done_before_kill) < 3

    assert _slow_run(local_recipe, paths, log, delay=0.0).wait(timeout=120) == 0
    computed = [line.split()[1] for line in log.read_text().splitlines()]
    assert sorted(computed) == sorted(set(computed)), "an item was computed twice"
    assert len(computed) == 3
    assert not list(paths.artifacts.glob(".tmp-*")), "the killed attempt's work folder was left behind"

    fresh = Paths(tmp_path / "fresh", tmp_path / "fresh" / "store.duckdb")
    assert _slow_run(local_recipe, fresh, tmp_path / "fresh.log", delay=0.0).wait(timeout=120) == 0
    assert _tables(paths) == _tables(fresh)


def _tables(paths: Paths) -> dict[str, list]:
    run_dir = next(p.parent for p in paths.runs_dir.glob("*/manifest.json"))
    with duckdb.connect(str(run_dir / "data.duckdb"), read_only=True) as con:
        return {
            t: sorted(map(str, con.execute(f'SELECT * FROM "{t}"').fetchall()))
            for t in ("sources", "transcripts", "slowcount")
        }


def test_finished_run_has_a_report_that_says_complete(local_recipe: Path, paths: Paths) -> None:
    result = run(local_recipe, paths)
    page = (result.run_dir / "report.html").read_text(encoding="utf-8")
    assert "status complete" in page and "transcripts" in page


def test_a_fully_cached_run_into_a_new_folder_gets_its_report(local_recipe: Path, paths: Paths) -> None:
    run(local_recipe, paths)
    elsewhere = Paths(paths.runs_dir.parent / "other-runs", paths.store)  # same store: every step cached
    again = run(local_recipe, elsewhere)
    assert again.executed == []
    assert "status complete" in (again.run_dir / "report.html").read_text(encoding="utf-8")
