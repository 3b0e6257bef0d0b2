"""The store lock between two real processes: one store however its path is spelled, and another
program holding the DuckDB file (a duckdb shell, a notebook) gets the same message as a run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import StoreBusy
from engine.pipeline.runner import Paths, run_recipe
from engine.pipeline.store import Store
from engine.steps.base import RunOptions

ROOT = Path(__file__).resolve().parents[2]

HOLD_STORE = """
import sys, time
from engine.pipeline.store import Store
with Store(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""

HOLD_DUCKDB = """
import sys, time
import duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(script: str, path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the store; returns once it does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(seconds)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def spellings(tmp_path: Path) -> list[Path]:
    """The store file, through a symlink, with `..`, and relative to the current directory."""
    real = tmp_path / "runs" / "store.duckdb"
    real.parent.mkdir()
    with Store(real):
        pass
    link = tmp_path / "link.duckdb"
    link.symlink_to(real)
    return [real, link, tmp_path / "runs" / ".." / "runs" / "store.duckdb", Path(os.path.relpath(real))]


@pytest.mark.parametrize("held_as", [0, 1, 2, 3])
def test_every_spelling_of_the_store_takes_one_lock(tmp_path: Path, held_as: int) -> None:
    paths = spellings(tmp_path)
    holder = hold(HOLD_STORE, paths[held_as], 30)
    try:
        for other in paths:
            with pytest.raises(StoreBusy, match=f"is in use by pid {holder.pid}; .*--wait"):
                Store(other)
    finally:
        holder.kill()
        holder.wait()


def test_another_program_holding_the_file_gets_the_store_busy_message(
    tmp_path: Path, local_recipe: Path, paths: Paths
) -> None:
    with Store(paths.store):
        pass
    holder = hold(HOLD_DUCKDB, paths.store, 30)
    try:
        with pytest.raises(StoreBusy, match=f"store {paths.store} is in use by pid {holder.pid}; .*--wait"):
            run_recipe(local_recipe, paths, until="transcripts", options=RunOptions(quiet=True))
    finally:
        holder.kill()
        holder.wait()


def test_wait_queues_behind_another_program(local_recipe: Path, paths: Paths) -> None:
    with Store(paths.store):
        pass
    holder = hold(HOLD_DUCKDB, paths.store, 1.0)
    started = time.monotonic()
    result = run_recipe(local_recipe, paths, until="transcripts", options=RunOptions(quiet=True), wait=True)
    assert result.status == "complete" and time.monotonic() - started >= 0.5
    holder.wait()


def test_store_check_while_a_run_holds_the_store_says_in_use(tmp_path: Path) -> None:
    from engine.pipeline.salvage import check_store

    store = spellings(tmp_path)[0]
    holder = hold(HOLD_STORE, store, 30)
    try:
        with pytest.raises(StoreBusy, match=f"in use by pid {holder.pid}"):
            check_store(store)
    finally:
        holder.kill()
        holder.wait()
