"""Replies are committed by a writer thread in batches (issue 16): nothing answered is lost.

The client no longer commits each reply on the event loop; these tests hold it to what the
synchronous commit guaranteed: a call counts as done only once its reply is committed (so a
kill -9 mid-run loses no answered call), a failed commit fails the run instead of hanging it,
and no thread outlives the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from engine.llm.client import LLMClient, LLMRequest
from engine.pipeline.store import Store
from fakes.openai_server import FakeOpenAI, last_user_message
from helpers.llm_params import fake_params

ROOT = Path(__file__).resolve().parents[2]

# The child: a fan-out of 2,000 calls into a real store; after every finished call it writes
# how many have finished (fsynced), so the parent knows what was answered when it kills it.
CHILD = r"""
import os, sys
from pathlib import Path
from engine.llm.client import LLMClient, LLMRequest
from engine.pipeline.store import Store
from fakes.openai_server import FakeOpenAI
from helpers.llm_params import fake_params

store_path, done_path = Path(sys.argv[1]), Path(sys.argv[2])

class Counter:
    def __init__(self):
        self.n = 0
        self.fd = os.open(done_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    def advance(self, n=1):
        self.n += n
        os.pwrite(self.fd, f"{self.n:08d}".encode(), 0)
        os.fsync(self.fd)

with FakeOpenAI(lambda body: "a plain answer, in prose.", latency=0.02) as srv:
    with Store(store_path) as store:
        params = fake_params(srv, max_concurrency=50, reask=0, retries=0)
        requests = [LLMRequest(str(i), [{"role": "user", "content": f"item {i}"}]) for i in range(2000)]
        LLMClient(params, store.item_cache("llm")).run_many(requests, Counter())
"""


def test_a_kill_mid_run_loses_no_answered_call(tmp_path: Path) -> None:
    store_path, done_path = tmp_path / "store.duckdb", tmp_path / "done"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OPENAI_API_KEY": "sk-test"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store_path), str(done_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if done_path.exists() and done_path.read_bytes().strip() and int(done_path.read_bytes()) >= 300:
                break
            time.sleep(0.01)
        assert child.poll() is None, "the run ended before it could be killed mid-way"
        os.kill(child.pid, signal.SIGKILL)  # no cleanup of any kind runs
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    answered = int(done_path.read_bytes())
    with Store(store_path) as store:
        stored = len(store.item_cache("llm"))
    assert 300 <= answered < 2000
    assert stored >= answered, f"{answered} calls were counted done but only {stored} replies were committed"


def test_a_failed_commit_fails_the_run_and_leaves_no_thread(tmp_path: Path) -> None:
    with FakeOpenAI(lambda body: f"An answer to {last_user_message(body)}.", latency=0.01) as srv:
        with Store(tmp_path / "store.duckdb") as store:
            cache = store.item_cache("llm")

            def drop_the_table(text: str) -> tuple[str, None]:
                # the first reply read pulls the table from under the writer: its commit fails
                store.execute(f'DROP TABLE IF EXISTS "{cache.table}"')
                return text, None

            requests = [
                LLMRequest(str(i), [{"role": "user", "content": f"item {i}"}], read=drop_the_table) for i in range(20)
            ]
            client = LLMClient(fake_params(srv, reask=0), cache)
            with pytest.raises(duckdb.CatalogException):
                client.run_many(requests)
    assert not [t for t in threading.enumerate() if t.name == "llm-cache-writer"]


def test_every_reply_of_a_burst_is_committed_and_read_back(tmp_path: Path) -> None:
    """A burst of 200 replies at concurrency 100 (committed in batches) is all in the store,
    each under its own key, and a second run answers all of them from the cache."""
    with FakeOpenAI(lambda body: f"An answer to {last_user_message(body)}.", latency=0.05) as srv:
        params = fake_params(srv, max_concurrency=100, reask=0)
        requests = [LLMRequest(str(i), [{"role": "user", "content": f"item {i}"}]) for i in range(200)]
        with Store(tmp_path / "store.duckdb") as store:
            first = LLMClient(params, store.item_cache("llm")).run_many(requests)
            assert len(store.item_cache("llm")) == 200
        assert not [t for t in threading.enumerate() if t.name == "llm-cache-writer"]
        with Store(tmp_path / "store.duckdb") as store:
            again = LLMClient(params, store.item_cache("llm"))
            second = again.run_many(requests)
    assert srv.calls == 200
    assert all(r.ok for r in first) and all(r.cached for r in second)
    assert [r.text for r in second] == [f"An answer to item {i}." for i in range(200)]
    assert again.metrics["cached"] == 200 and again.metrics["calls"] == 0


def test_put_many_keeps_the_last_value_of_a_key_given_twice(tmp_path: Path) -> None:
    with Store(tmp_path / "store.duckdb") as store:
        cache = store.item_cache("llm")
        cache.put("a", {"text": "old"})
        cache.put_many([("a", {"text": "first"}), ("b", {"text": "ünïcode ✓"}), ("a", {"text": "last"})])
        cache.put_many([])
        assert cache.get("a") == {"text": "last"} and cache.get("b") == {"text": "ünïcode ✓"}
        assert len(cache) == 2


def test_replies_within_the_wait_share_one_commit_and_a_flush_commits_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's batches, as the client relies on them: replies that arrive together go
    into one commit after the wait; flush_now commits what waits at once, and a flush with
    nothing waiting does not cut the next batch's wait short; after close a reply is
    committed on the spot."""
    import asyncio

    from engine.llm.client import CacheWriter

    monkeypatch.setattr(CacheWriter, "FLUSH_SECONDS", 0.3)
    entry = {"text": "ünïcode ✓ reply", "usage": {"tokens": 3}, "valid": True, "error": None}
    with Store(tmp_path / "store.duckdb") as store:
        cache = store.item_cache("llm")

        async def run() -> tuple[float, float, float, asyncio.Future | None]:
            writer = CacheWriter(cache, asyncio.get_running_loop())
            started = time.monotonic()
            await asyncio.gather(*[writer.submit(f"burst {i}", entry) for i in range(30)])  # type: ignore[misc]
            burst = time.monotonic() - started
            started = time.monotonic()
            flushed = writer.submit("flushed", entry)
            writer.flush_now()
            await flushed  # type: ignore[misc]
            flush = time.monotonic() - started
            writer.flush_now()  # nothing waits: nothing to commit, nothing remembered
            started = time.monotonic()
            await writer.submit("after", entry)  # type: ignore[misc]
            after = time.monotonic() - started
            writer.close()
            return burst, flush, after, writer.submit("closed", entry)

        burst, flush, after, late = asyncio.run(run())
        commits = store.execute(f"SELECT count(DISTINCT created) FROM \"{cache.table}\" WHERE key LIKE 'burst %'")
        assert len(cache) == 33 and cache.get("burst 29") == entry and cache.get("closed") == entry
    assert commits == [(1,)]  # one statement, one commit for the whole burst
    assert burst >= 0.25 and flush < 0.15 and after >= 0.25, (burst, flush, after)
    assert late is None  # committed on the spot
    assert not [t for t in threading.enumerate() if t.name == "llm-cache-writer"]
