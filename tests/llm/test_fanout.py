"""The fan-out's shape (issue 16): slots refilled by workers, retries that lend their slot,
litellm's request preparation on the loop, and a last batch committed without waiting.

Real HTTP to the fake server and a real DuckDB store throughout.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import engine.llm.client as llm
from engine.llm.client import CacheWriter, LLMClient, LLMRequest
from engine.llm.providers import InlinePreparation, load_litellm, prepares_inline
from engine.pipeline.store import Store
from fakes.openai_server import ErrorReply, FakeOpenAI, last_user_message
from helpers.llm_params import fake_params


def _answer(body: dict) -> str:
    return f"The answer to {last_user_message(body)}."


def _requests(n: int) -> list[LLMRequest]:
    return [LLMRequest(str(i), [{"role": "user", "content": f"item {i}"}]) for i in range(n)]


def test_every_slot_is_used_and_none_is_added_while_calls_retry() -> None:
    """A worker asleep before a retry lends its slot to a new worker, yet no more than
    max_concurrency requests are ever in flight, and every request ends once."""
    with FakeOpenAI(_answer, latency=0.02, faults={"500": 0.3, "429": 0.1}, seed=3) as srv:
        client = LLMClient(fake_params(srv, max_concurrency=6, retries=8, reask=0))
        results = client.run_many(_requests(150))
    assert [r.id for r in results] == [str(i) for i in range(150)]  # request order, each once
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    assert [r.text for r in results] == [f"The answer to item {i}." for i in range(150)]
    assert client.metrics["retries"] > 0
    assert srv.max_in_flight == 6  # reached, never exceeded


def _timed_run(client: LLMClient, requests: list[LLMRequest]) -> tuple[list, float]:
    # litellm's first call in a process sets itself up (seconds): untimed
    client.run_many([LLMRequest("warm-up", [{"role": "user", "content": "warm-up"}])])
    started = time.monotonic()
    results = client.run_many(requests)
    return results, time.monotonic() - started


def test_slots_stay_full_while_others_sleep_before_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every even item fails its first try and sleeps 0.5-1 s before retrying; the other calls
    go on meanwhile (a sleeping worker lends its slot), so the faults add about one backoff
    and their retries, not one backoff per sleeper."""
    seen: set[str] = set()
    lock = threading.Lock()

    def first_try_of_an_even_item(body: dict) -> bool:
        item = last_user_message(body)
        with lock:
            first = item.startswith("item ") and int(item.split()[1]) % 2 == 0 and item not in seen
            seen.add(item)
        return first

    monkeypatch.setattr(llm, "BACKOFF_BASE", 1.0)
    requests = _requests(80)
    with FakeOpenAI(_answer, latency=0.05) as srv:
        _, clean = _timed_run(LLMClient(fake_params(srv, max_concurrency=4, retries=2, reask=0)), requests)
    error = ErrorReply(500, "try again", when=first_try_of_an_even_item)
    with FakeOpenAI(_answer, latency=0.05, error=error) as srv:
        client = LLMClient(fake_params(srv, max_concurrency=4, retries=2, reask=0))
        results, faulty = _timed_run(client, requests)
    assert [r.text for r in results] == [f"The answer to item {i}." for i in range(80)]
    assert client.metrics["retries"] == 40
    assert srv.max_in_flight <= 4
    # 40 sleepers of 0.75 s on average, each holding one of 4 slots, would add ~7.5 s
    assert faulty < 1.5 * clean + 2.0, (faulty, clean)


def test_the_last_replies_are_committed_without_the_batch_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When every unfinished call waits for a commit, none can join the batch: it is committed
    at once, not after the writer's wait (was: the run's end always waited it out)."""
    monkeypatch.setattr(CacheWriter, "FLUSH_SECONDS", 5.0)
    with FakeOpenAI(_answer, latency=0.01) as srv, Store(tmp_path / "store.duckdb") as store:
        cache = store.item_cache("llm")
        client = LLMClient(fake_params(srv, max_concurrency=10, reask=0), cache)
        results, took = _timed_run(client, _requests(10))
        assert all(r.ok for r in results)
        assert len(cache) == 11  # committed before run_many returned (and the untimed first call)
    assert took < 2.5, took


def test_a_slow_commit_never_holds_a_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replies wait for their commit off the worker: with a long batch wait the calls still
    go out back to back, and each result still counts only once committed."""
    monkeypatch.setattr(CacheWriter, "FLUSH_SECONDS", 1.0)
    with FakeOpenAI(_answer, latency=0.01) as srv, Store(tmp_path / "store.duckdb") as store:
        cache = store.item_cache("llm")
        client = LLMClient(fake_params(srv, max_concurrency=2, reask=0), cache)
        results, took = _timed_run(client, _requests(40))
        assert all(r.ok for r in results) and len(cache) == 41
    # 20 rounds of 0.01 s; a worker waiting for each commit would wait ~1 s a round
    assert took < 4.0, took


def test_litellm_prepares_openai_requests_on_the_loop() -> None:
    """Every preparation of an openai/ call runs inline (no thread hop); replies unchanged."""
    with FakeOpenAI(_answer, latency=0.01) as srv:
        client = LLMClient(fake_params(srv, max_concurrency=5, reask=0))
        results = client.run_many(_requests(12))
    assert [r.text for r in results] == [f"The answer to item {i}." for i in range(12)]
    assert client.preparation is not None and client.preparation.inlined == 12


def test_other_providers_and_other_work_keep_their_threads() -> None:
    """A provider whose preparation may do I/O keeps litellm's threads; so does any other
    work submitted to the executor (a DNS lookup), and it runs off the caller's thread."""
    assert prepares_inline("openai/gpt-4o-mini", None)
    assert not prepares_inline("vertex_ai/gemini-1.5-pro", None)
    assert not prepares_inline("bedrock/anthropic.claude-3-haiku-20240307-v1:0", None)
    assert not prepares_inline("not-a-provider/x", None)
    executor = InlinePreparation()
    try:
        elsewhere = executor.submit(threading.get_ident).result(timeout=5)
        assert elsewhere != threading.get_ident()
        assert executor.submit(partial(sum, [1, 2])).result(timeout=5) == 3
        assert executor.inlined == 0
    finally:
        executor.shutdown()


def test_an_unrecognised_preparation_takes_the_thread_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A litellm whose preparation is not where we look for it (another version): the calls
    go through litellm's threads, as before, and still succeed."""
    load_litellm()
    monkeypatch.setitem(sys.modules, "litellm.main", types.ModuleType("litellm.main"))
    with FakeOpenAI(_answer, latency=0.01) as srv:
        client = LLMClient(fake_params(srv, max_concurrency=3, reask=0))
        results = client.run_many(_requests(6))
    assert [r.text for r in results] == [f"The answer to item {i}." for i in range(6)]
    assert client.preparation is not None and client.preparation.inlined == 0


def test_a_reply_read_is_followed_at_once_by_its_slots_next_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first five replies leave the server at the same moment. Each is read and its slot's
    next request sent before the next reply is read (was: all five read, then all five sent on
    the loop's next pass, so the next round came back as the same burst, issue 16). Pacing is
    off here: it spaces such a bunch's requests on purpose (test_pacing.py)."""
    monkeypatch.setattr(llm, "PACING_FACTOR", 0.0)
    litellm = load_litellm()
    from litellm.integrations.custom_logger import CustomLogger

    events: list[str] = []

    class Sends(CustomLogger):
        def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
            events.append("send")  # litellm calls it just before the request goes out

    class Done:
        def advance(self, n: int = 1) -> None:
            events.append("done")

    first_wave = threading.Barrier(5, timeout=20)

    def together(body: dict) -> str:
        item = last_user_message(body)
        if item.startswith("item ") and int(item.split()[1]) < 5:
            first_wave.wait()  # every one of the first five answers at once
        return _answer(body)

    monkeypatch.setattr(litellm, "input_callback", [Sends()])
    with FakeOpenAI(together) as srv:
        client = LLMClient(fake_params(srv, max_concurrency=5, reask=0))
        client.run_many([LLMRequest("warm-up", [{"role": "user", "content": "warm-up"}])])
        events.clear()
        results = client.run_many(_requests(10), Done())  # type: ignore[arg-type]
    assert [r.text for r in results] == [f"The answer to item {i}." for i in range(10)]
    assert events[:5] == ["send"] * 5
    assert events[5:15] == ["done", "send"] * 5
    assert events[15:] == ["done"] * 5


def test_litellms_objects_are_kept_out_of_the_garbage_collectors_walks() -> None:
    """Once litellm is loaded, a full collection no longer walks its ~400k import-time objects
    (was: each one stopped the event loop for 0.2-0.5 s, a few times per 1,000 calls)."""
    probe = (
        "import gc\n"
        "from engine.llm.providers import load_litellm\n"
        "load_litellm()\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    frozen, walked = (int(n) for n in done.stdout.split())
    assert frozen > 100_000, done.stdout
    assert walked < frozen / 20, done.stdout


def test_a_reply_is_committed_before_the_next_spaced_call_goes_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls spaced by requests_per_minute: with no call in flight nothing can join the batch,
    so each reply is committed (and counted) before the next call is sent, not after the
    writer's wait (a run killed between two calls loses no answered call)."""
    monkeypatch.setattr(CacheWriter, "FLUSH_SECONDS", 5.0)
    sent: list[float] = []
    counted: list[float] = []

    def answer(body: dict) -> str:
        sent.append(time.monotonic())
        return _answer(body)

    class Counted:
        def advance(self, n: int = 1) -> None:
            counted.append(time.monotonic())

    with FakeOpenAI(answer) as srv, Store(tmp_path / "store.duckdb") as store:
        params = fake_params(srv, max_concurrency=1, requests_per_minute=240, reask=0)
        client = LLMClient(params, store.item_cache("llm"))
        client.run_many([LLMRequest("warm-up", [{"role": "user", "content": "warm-up"}])])
        sent.clear()
        results = client.run_many(_requests(4), Counted())  # type: ignore[arg-type]
    assert all(r.ok for r in results)
    assert len(sent) == len(counted) == 4
    assert all(done < following for done, following in zip(counted, sent[1:], strict=False)), (counted, sent)
