"""Ten SIGKILLs at random moments: a real `recipe run` (questions, answers, augment against the fake
OpenAI server over real HTTP) killed ten times, then let finish, ends with the same step tables as
a run never interrupted, and never asks again a call whose reply was already committed.

How "finished" is told exactly: every reply carries a `ref` (a digest of its request) in its JSON,
so after each kill the store's LLM cache says which replies were committed; a request the next
attempt sends must not be one of those. Requests in flight at a kill (sent, reply not yet
committed) may legitimately be asked again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from fakes.openai_server import FakeOpenAI
from helpers.pipeline import BASE_RECIPE, CASES, pipeline_model

ROOT = Path(__file__).resolve().parents[2]
KILLS = 10
SEED = int(os.environ.get("KILL_TEST_SEED", "12"))  # another seed: KILL_TEST_SEED=7 pytest ...
LATENCY = 0.2  # seconds per reply: long enough that a kill finds calls done, in flight and not yet sent
STEPS = ("sources", "transcripts", "questions", "answers", "curate", "augment", "split")


class MarkedServer(FakeOpenAI):
    """The pipeline's fake model, each reply marked with its request's ref; logs refs as they arrive."""

    def __init__(self) -> None:
        super().__init__(self.reply)
        self.asked: list[str] = []
        self._asked_lock = threading.Lock()

    def reply(self, body: dict) -> str:
        ref = request_ref(body)
        with self._asked_lock:
            self.asked.append(ref)  # on arrival: a kill in the latency below finds it in flight
        time.sleep(LATENCY)
        value = json.loads(pipeline_model(body))
        value["ref"] = ref
        return json.dumps(value)

    def asked_since(self, start: int) -> list[str]:
        with self._asked_lock:
            return self.asked[start:]


def request_ref(body: dict) -> str:
    return hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:20]


def committed_refs(store: Path) -> set[str]:
    """Refs of every reply in the store's LLM cache (read-only: the killed run holds nothing now)."""
    if not store.exists():
        return set()
    with duckdb.connect(str(store), read_only=True) as con:
        if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = '_cache_llm'").fetchall():
            return set()
        values = [r[0] for r in con.execute("SELECT value FROM _cache_llm").fetchall()]
    return {ref for v in values for text in _strings(json.loads(v)) for ref in REF.findall(text)}


REF = re.compile(r'"ref":\s*"([0-9a-f]{20})"')


def _strings(value: object) -> list[str]:
    """Every string inside a JSON value (the reply text sits somewhere in the cached record)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def start_run(recipe: Path, runs: Path) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    command = [sys.executable, "-m", "engine.cli", "-q", "run", str(recipe), "--until", "split"]
    command += ["--store", str(runs / "store.duckdb"), "--runs-dir", str(runs)]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def step_tables(runs: Path) -> dict[str, list[str]]:
    """Every step table of the finished run, rows in order (from the run folder's data.duckdb)."""
    (data,) = runs.glob("*/data.duckdb")
    with duckdb.connect(str(data), read_only=True) as con:
        return {t: sorted(map(str, con.execute(f'SELECT * FROM "{t}"').fetchall())) for t in STEPS}


@pytest.mark.slow
def test_ten_sigkills_resume_with_identical_tables_and_no_finished_call_repeated(tmp_path: Path) -> None:
    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    rng = random.Random(SEED)
    with MarkedServer() as srv:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(_recipe_text(srv.base_url), encoding="utf-8")

        # the uninterrupted run: its tables, its calls, and how long it takes to start here
        started = time.monotonic()
        baseline = start_run(recipe, tmp_path / "baseline")
        startup = wait_for_calls(srv, 0, 1, baseline) - started
        assert baseline.wait(timeout=120) == 0, baseline.stderr.read().decode()  # type: ignore[union-attr]
        expected_calls = srv.asked_since(0)
        assert len(expected_calls) == len(set(expected_calls)) >= 10

        runs = tmp_path / "killed"
        committed: set[str] = set()
        interrupted_llm_work = 0
        for attempt in range(KILLS):
            first = len(srv.asked)
            proc = start_run(recipe, runs)
            kill_at_random_moment(rng, srv, first, len(expected_calls) - len(committed), startup, proc)
            assert proc.wait(timeout=30) == -signal.SIGKILL, f"attempt {attempt} ended before its kill"
            asked = srv.asked_since(first)
            repeated = set(asked) & committed
            assert not repeated, f"attempt {attempt} asked again {len(repeated)} call(s) already committed"
            assert len(asked) == len(set(asked)), f"attempt {attempt} asked one call twice"
            now_committed = committed_refs(runs / "store.duckdb")
            assert committed <= now_committed, "a committed reply disappeared after a kill"
            interrupted_llm_work += bool(asked) and not set(expected_calls) <= now_committed
            committed = now_committed

        first = len(srv.asked)
        final = start_run(recipe, runs)
        assert final.wait(timeout=120) == 0, final.stderr.read().decode()  # type: ignore[union-attr]
        asked = srv.asked_since(first)
        assert not set(asked) & committed, "the final run asked again a call already committed"

    assert interrupted_llm_work >= 3, "too few kills landed during LLM work to prove anything"
    assert committed_refs(runs / "store.duckdb") == set(expected_calls)
    assert step_tables(runs) == step_tables(tmp_path / "baseline")
    manifest = json.loads(next(runs.glob("*/manifest.json")).read_text())
    assert manifest["status"] == "complete"
    assert not list(runs.glob("*/.data.duckdb*")), "a killed export left its temporary file"
    with duckdb.connect(str(runs / "store.duckdb"), read_only=True) as con:
        assert not con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '_tmp_%'").fetchall()


def kill_at_random_moment(
    rng: random.Random, srv: MarkedServer, first: int, remaining: int, startup: float, proc: subprocess.Popen
) -> None:
    """SIGKILL while starting up (sometimes, and always once every call is cached), else after a
    random number of this attempt's calls arrived plus up to 1.5 replies' latency: mid-call, between
    calls, or (after the last call) while the last steps and the run folder are written."""
    if remaining == 0 or rng.random() < 0.2:
        time.sleep(rng.uniform(0.3, 0.9) * startup)  # a run starts no faster with every call cached
    else:
        wait_for_calls(srv, first, rng.randint(1, min(remaining, 3)), proc)  # spread over ten kills
        time.sleep(rng.uniform(0.0, 1.5) * LATENCY)
    proc.send_signal(signal.SIGKILL)


def wait_for_calls(srv: MarkedServer, first: int, count: int, proc: subprocess.Popen) -> float:
    """Wait until the server got `count` calls since index `first`; returns when (monotonic)."""
    deadline = time.monotonic() + 60
    while len(srv.asked) - first < count:
        assert proc.poll() is None, f"the run ended after {len(srv.asked) - first} of {count} calls"
        assert time.monotonic() < deadline, "no calls reached the server"
        time.sleep(0.005)
    return time.monotonic()


def _recipe_text(base_url: str) -> str:
    """The pipeline recipe, one call at a time: the ten kills spread over the whole LLM work."""
    text = BASE_RECIPE.format(base_url=base_url)
    assert "reask: 0}" in text
    return text.replace("reask: 0}", "reask: 0, max_concurrency: 1}")
