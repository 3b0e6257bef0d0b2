"""An invalid reply is never kept as good data: validated before caching, re-asked, never ok.

Real HTTP to the fake OpenAI server, a real DuckDB store; the cache is read back with SQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.llm.client import LLMClient, LLMRequest
from engine.llm.json_reply import read_prose
from engine.pipeline.store import Store
from engine.recipe.shared import LLMParams
from fakes.openai_server import JUNK, FakeOpenAI
from helpers.llm_params import fake_params

LIST = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "object", "required": ["question"], "properties": {"question": {"type": "string"}}},
}


def params(srv: FakeOpenAI, **kw) -> LLMParams:  # noqa: ANN003
    return fake_params(srv, **{"max_concurrency": 4, "retries": 2, "reask": 0, **kw})


def ask(n: int = 1, schema: dict | None = LIST) -> list[LLMRequest]:
    return [LLMRequest(f"r{i}", [{"role": "user", "content": f"item {i}"}], schema) for i in range(n)]


def cache_rows(store: Store) -> list[dict]:
    rows = store.query("SELECT value FROM _cache_llm")
    return [json.loads(r["value"]) for r in rows]


class Script:
    """A responder that plays the given replies in turn, then repeats the last one."""

    def __init__(self, *replies: str):
        self.replies, self.seen = list(replies), 0

    def __call__(self, body: dict) -> str:
        reply = self.replies[min(self.seen, len(self.replies) - 1)]
        self.seen += 1
        return reply


GOOD = json.dumps([{"question": "Why do we fast?"}])


def test_an_invalid_reply_is_cached_as_invalid_and_asked_again_next_time(tmp_path: Path) -> None:
    with Store(tmp_path / "store.duckdb") as store, FakeOpenAI(Script(JUNK, GOOD)) as srv:
        [first] = LLMClient(params(srv), store.item_cache("llm")).run_many(ask())
        assert not first.ok and first.reason == "invalid JSON after 1 attempt(s): the reply contains no parsable JSON"
        assert cache_rows(store) == [
            {
                "text": JUNK,
                "usage": cache_rows(store)[0]["usage"],
                "model": "openai/fake",
                "valid": False,
                "error": "the reply contains no parsable JSON",
            }
        ]
        # the step runs again (--retry-failed, --force): the invalid reply is not its answer
        again = LLMClient(params(srv), store.item_cache("llm"))
        [second] = again.run_many(ask())
        assert second.ok and second.value == [{"question": "Why do we fast?"}] and not second.cached
        assert srv.calls == 2 and again.metrics["invalid_reasked"] == 1
        assert [(r["text"], r["valid"]) for r in cache_rows(store)] == [(GOOD, True)]
        # and a valid reply is reused from then on
        [third] = LLMClient(params(srv), store.item_cache("llm")).run_many(ask())
        assert third.ok and third.cached and srv.calls == 2


def test_a_reask_conversation_is_replayed_from_the_cache(tmp_path: Path) -> None:
    """The invalid first reply stays as the earlier turn: its valid follow-up is reused, nothing is paid twice."""
    with Store(tmp_path / "store.duckdb") as store, FakeOpenAI(Script("Sure! {oops", GOOD)) as srv:
        [first] = LLMClient(params(srv, reask=1), store.item_cache("llm")).run_many(ask())
        [second] = LLMClient(params(srv, reask=1), store.item_cache("llm")).run_many(ask())
        assert sorted(r["valid"] for r in cache_rows(store)) == [False, True]
    assert first.ok and second.ok and second.cached and second.value == first.value
    assert srv.calls == 2


def test_a_cache_entry_from_before_verdicts_is_judged_on_reading(tmp_path: Path) -> None:
    """Entries written by older versions (text only) are read like new replies: junk is re-asked."""
    with Store(tmp_path / "store.duckdb") as store, FakeOpenAI(Script(GOOD)) as srv:
        client = LLMClient(params(srv), store.item_cache("llm"))
        key = client.cache_key(ask()[0].messages)
        store.item_cache("llm").put(key, {"text": JUNK, "usage": {}, "model": "openai/fake"})
        [result] = client.run_many(ask())
        assert result.ok and srv.calls == 1
        assert cache_rows(store)[0]["valid"] is True


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        JUNK,
        '{"answer": "Insulin stores fat."}',
        '[{"number": 1, "answer": "x"}]',
        "```json\n[1, 2]\n```",
        "<html><body>502 Bad Gateway</body></html>",
        "12345 ... !!!",
        "Insulin rises, then {falls",
    ],
)
def test_free_text_that_is_not_prose_is_an_invalid_reply(text: str) -> None:
    value, error = read_prose(text)
    assert value is None and error


@pytest.mark.parametrize(
    "text",
    [
        "Insulin rises after a meal [laughs] and then it falls.",
        "1. Eat less often.\n2. Sleep more.",
        "Why? Because the body adapts (within weeks) to the new schedule.",
        "In JavaScript an empty object is written `{}` and a list is `[1, 2]`.",
        "[Music] Welcome back. Today: why the body stores fat.",
    ],
)
def test_prose_is_a_valid_reply(text: str) -> None:
    assert read_prose(text) == (text.strip(), None)


def test_free_text_junk_is_reasked_as_plain_text_never_ok(tmp_path: Path) -> None:
    with (
        Store(tmp_path / "store.duckdb") as store,
        FakeOpenAI(Script(JUNK, JUNK, "Because fasting lowers insulin.")) as srv,
    ):
        [failed] = LLMClient(params(srv, reask=1), store.item_cache("llm")).run_many(ask(schema=None))
        assert not failed.ok and failed.value is None
        assert (
            failed.reason
            == "invalid reply after 2 attempt(s): the reply has unbalanced braces or brackets (broken JSON?), not prose"
        )
        followup = srv.requests[1]["messages"][-1]["content"]
        assert "plain text" in followup and "JSON" in followup
        [ok] = LLMClient(params(srv, reask=1), store.item_cache("llm")).run_many(ask(schema=None))
        assert ok.ok and ok.value == "Because fasting lowers insulin." and srv.calls == 3
        assert all(r["valid"] == (r["text"] != JUNK) for r in cache_rows(store))


def test_a_slow_single_slot_server_gets_fewer_requests_after_a_timeout(tmp_path: Path) -> None:
    """Queued time counts toward the timeout: after one, the client keeps fewer calls in flight."""
    with FakeOpenAI(Script(GOOD), latency=0.3, slots=1) as srv:
        client = LLMClient(params(srv, max_concurrency=6, timeout=1.0, retries=6))
        started = time.monotonic()
        results = client.run_many(ask(8))
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    assert client.metrics["concurrency_lowered_to"] < 6
    assert time.monotonic() - started < 30


def test_a_call_that_keeps_timing_out_says_which_setting_to_change() -> None:
    def slow_for_one(body: dict) -> str:
        if body["messages"][0]["content"] == "item 0":
            time.sleep(1.5)
        return GOOD

    with FakeOpenAI(slow_for_one) as srv:
        results = LLMClient(params(srv, timeout=0.5, retries=1)).run_many(ask(2))
    assert results[1].ok and not results[0].ok
    assert results[0].reason.startswith("gave up after 2 attempt(s): Timeout")
    assert "llm.timeout = 0.5 s" in results[0].reason and "--retry-failed" in results[0].reason
