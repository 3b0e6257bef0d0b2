"""The LLM client over real HTTP against the fake OpenAI server: faults, re-asks, limits, cache."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import engine.llm.client as llm
from engine.llm.client import LLMClient, LLMRequest
from engine.llm.json_reply import parse
from engine.pipeline.store import Store
from engine.recipe.shared import LLMParams
from fakes.openai_server import FakeOpenAI, last_user_message
from helpers.llm_params import fake_params

LIST = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["question"],
        "properties": {"question": {"type": "string", "minLength": 5}, "tags": {"type": "array"}},
    },
}
ANSWERS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["number", "answer"],
        "properties": {"number": {"type": "integer"}, "answer": {"type": "string"}},
    },
}


def params(srv: FakeOpenAI, **kw) -> LLMParams:  # noqa: ANN003
    return fake_params(srv, **kw)


def echo(body: dict) -> str:
    """Answers the first user message, so re-asks repeat the same answer."""
    return json.dumps({"questions": [{"question": f"Why {body['messages'][0]['content']}?", "tags": ["x"]}]})


def requests(n: int, schema: dict | None = LIST) -> list[LLMRequest]:
    return [LLMRequest(f"r{i}", [{"role": "user", "content": f"item {i}"}], schema) for i in range(n)]


def test_results_complete_under_injected_faults() -> None:
    faults = {"429": 0.1, "500": 0.1, "timeout": 0.05, "garbage": 0.1, "truncated": 0.1}
    with FakeOpenAI(echo, latency=0.01, faults=faults, seed=3, timeout_sleep=1.0) as srv:
        # 4 re-asks: with 2, one item in 1,000 got truncated JSON on all 3 attempts (a 1-in-25
        # chance per run over 40 items, which fault lands where depends on timing; CI hit it)
        client = LLMClient(params(srv, timeout=0.5, reask=4))
        results = client.run_many(requests(40))
    assert [r.id for r in results] == [f"r{i}" for i in range(40)]
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    assert [r.value[0]["question"] for r in results] == [f"Why item {i}?" for i in range(40)]
    assert set(srv.faults_injected) == set(faults)  # every kind of fault really happened
    assert srv.calls > 40
    assert client.metrics["retries"] > 0 and client.metrics["reasks"] > 0
    assert client.metrics["failures"] == 0


def test_invalid_json_is_reasked_with_the_error_then_recorded_failed() -> None:
    with FakeOpenAI(lambda body: '{"questions": [{"topic": 1}]}') as srv:
        client = LLMClient(params(srv, reask=2))
        [result] = client.run_many(requests(1))
    assert not result.ok and result.value is None
    assert "invalid JSON after 3 attempt(s)" in result.reason and "question" in result.reason
    assert srv.calls == 3
    followup = srv.requests[-1]["messages"]
    assert followup[-2] == {"role": "assistant", "content": '{"questions": [{"topic": 1}]}'}
    assert "could not be used" in followup[-1]["content"] and "'question' is a required" in followup[-1]["content"]
    assert client.metrics["failures"] == 1 and client.metrics["reasks"] == 2


def test_reask_recovers_when_the_model_corrects_itself() -> None:
    def responder(body: dict) -> str:
        return echo(body) if len(body["messages"]) > 1 else "Sure! Here you go: {oops"

    with FakeOpenAI(responder) as srv:
        [result] = LLMClient(params(srv)).run_many(requests(1))
    assert result.ok and result.value == [{"question": "Why item 0?", "tags": ["x"]}]
    assert srv.calls == 2
    assert "no parsable JSON" in last_user_message(srv.requests[1])


def test_concurrency_never_exceeds_the_limit() -> None:
    with FakeOpenAI(echo, latency=0.1) as srv:
        LLMClient(params(srv, max_concurrency=4)).run_many(requests(16))
    assert 3 <= srv.max_in_flight <= 4  # the limit is used, never exceeded


def test_rate_limit_holds() -> None:
    with FakeOpenAI(echo) as srv:
        # litellm's first call in a process blocks the loop for a moment and delays the sends
        # queued behind it; warm it up so what is measured is the limiter.
        LLMClient(params(srv)).run_many(requests(1, schema=None))
        srv.call_times.clear()
        LLMClient(params(srv, requests_per_minute=1200, max_concurrency=8)).run_many(requests(11))
    times = sorted(srv.call_times)
    # 20 per second: 11 calls need at least 10 intervals of 50 ms
    assert times[-1] - times[0] >= 0.45
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sum(gaps) / len(gaps) >= 0.045


def test_responses_are_cached_and_never_asked_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-do-not-store")
    with Store(tmp_path / "store.duckdb") as store, FakeOpenAI(echo) as srv:
        first = LLMClient(params(srv), store.item_cache("llm")).run_many(requests(5))
        again = LLMClient(params(srv), store.item_cache("llm"))
        second = again.run_many(requests(5))
        assert len(store.item_cache("llm")) == 5
    assert srv.calls == 5
    assert [r.value for r in first] == [r.value for r in second]
    assert all(r.cached for r in second) and again.metrics["cached"] == 5 and again.metrics["calls"] == 0
    assert b"sk-secret" not in (tmp_path / "store.duckdb").read_bytes()


def test_cache_key_ignores_endpoint_but_not_model_or_params() -> None:
    with FakeOpenAI(echo) as srv:
        base = LLMClient(params(srv)).cache_key([{"role": "user", "content": "x"}])
        moved = LLMClient(params(srv, api_base="http://elsewhere/v1")).cache_key([{"role": "user", "content": "x"}])
        hotter = LLMClient(params(srv, temperature=0.9)).cache_key([{"role": "user", "content": "x"}])
        other = LLMClient(params(srv, model="openai/other")).cache_key([{"role": "user", "content": "x"}])
    assert base == moved and len({base, hotter, other}) == 3


def test_usage_tokens_are_summed() -> None:
    with FakeOpenAI(lambda body: "one two three") as srv:
        client = LLMClient(params(srv))
        results = client.run_many(requests(4, schema=None))
    assert [r.value for r in results] == ["one two three"] * 4
    assert client.metrics["completion_tokens"] == 12
    assert client.metrics["prompt_tokens"] == 8  # "item N" = 2 words each
    assert client.metrics["tokens"] == 20 and results[0].usage["tokens"] == 5


def test_retries_exhausted_is_a_failed_result_not_an_exception() -> None:
    with FakeOpenAI(echo, faults={"500": 0.5}, seed=1) as srv:
        results = LLMClient(params(srv, retries=0)).run_many(requests(10))
    failed = [r for r in results if not r.ok]
    assert 0 < len(failed) < 10 and srv.calls == 10
    assert {r.reason.split(":")[0] for r in failed} == {"gave up after 1 attempt(s)"}


def test_provider_down_for_every_call_fails_the_run_instead_of_recording_failures() -> None:
    with FakeOpenAI(echo, faults={"500": 1.0}) as srv:
        with pytest.raises(llm.LLMUnavailable, match="all 3 call"):
            LLMClient(params(srv, retries=1)).run_many(requests(3))
    assert srv.calls == 6


def test_rejected_key_stops_at_once_with_a_hint() -> None:
    with FakeOpenAI(echo, faults={"401": 1.0}) as srv:
        with pytest.raises(llm.LLMUnavailable, match="OPENAI_API_KEY"):
            LLMClient(params(srv, max_concurrency=1)).run_many(requests(3))
    assert srv.calls == 1  # no retries on a bad key


def test_missing_key_stops_at_once_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server elsewhere (one on this machine needs no key: tests/llm/test_local_server.py)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI(echo) as srv:
        elsewhere = srv.base_url.replace("127.0.0.1", "llm.example.invalid")
        with pytest.raises(llm.LLMUnavailable, match="OPENAI_API_KEY"):
            LLMClient(params(srv, max_concurrency=1, api_base=elsewhere)).run_many(requests(2))
    assert srv.calls == 0  # the SDK refuses before sending; nothing is retried


@pytest.mark.parametrize(
    "text,expected",
    [
        ('[{"question": "Why so?"}]', [{"question": "Why so?"}]),
        ('Sure:\n```json\n{"questions": [{"question": "Why so?"}]}\n```\nHope it helps', [{"question": "Why so?"}]),
        ('{"questions": [{"question": "Why so?", "tags": ["a"]}, {"question": "How do', [{"question": "Why so?"}]),
        (
            "Questions:\n1. What is fasting?\n2) Why skip breakfast?",
            [{"question": "What is fasting?"}, {"question": "Why skip breakfast?"}],
        ),
        (
            "- What is fasting?\n- Why skip breakfast?",
            [{"question": "What is fasting?"}, {"question": "Why skip breakfast?"}],
        ),
        # what the demo's 135M model really wrote: a placeholder item, then the question renamed
        (
            'Here is a JSON response:\n [\n  {"questions": [{"question": "...", "tags": ["..."]}],\n'
            '   "response_type": [{"title" : "Is breakfast the most important meal?", "content": `No',
            [{"question": "Is breakfast the most important meal?"}],
        ),
    ],
)
def test_parse_accepts_lenient_shapes(text: str, expected: list) -> None:
    assert parse(text, LIST) == (expected, None)


def test_parse_numbered_plain_answers_keep_their_numbers() -> None:
    value, error = parse("1. Insulin stores fat.\nIt is a hormone.\n\n3. Fasting lowers it.", ANSWERS)
    assert error is None
    assert value == [
        {"answer": "Insulin stores fat. It is a hormone.", "number": 1},
        {"answer": "Fasting lowers it.", "number": 3},
    ]


def test_parse_reports_why_it_failed() -> None:
    assert parse("I cannot help with that.", LIST) == (None, "the reply contains no parsable JSON")
    value, error = parse(
        '{"standalone": "yes"}',
        {"type": "object", "required": ["standalone"], "properties": {"standalone": {"type": "boolean"}}},
    )
    assert value is None and "at standalone: 'yes' is not of type 'boolean'" == error


def test_mlx_provider_generates_in_process_with_micro_batches(tmp_path: Path) -> None:
    pytest.importorskip("mlx_lm")
    import engine.llm.mlx_provider as mlx_provider
    from helpers.tiny_model import make_tiny_llama

    model_dir = make_tiny_llama(tmp_path / "tiny")
    p = LLMParams(
        model=f"mlx:{model_dir}",
        api_base=None,
        temperature=0.0,
        max_tokens=8,
        max_concurrency=6,
        requests_per_minute=0,
        timeout=60,
        retries=0,
        reask=0,
    )
    with Store(tmp_path / "store.duckdb") as store:
        client = LLMClient(p, store.item_cache("llm"), context={"models_dir": tmp_path / "models"})
        results = client.run_many(requests(6, schema=None))
        batches = [b.batch_sizes for b in mlx_provider._handler.batchers.values()]
        again = LLMClient(p, store.item_cache("llm"), context={"models_dir": tmp_path / "models"})
        cached = again.run_many(requests(6, schema=None))
    assert all(r.ok and isinstance(r.value, str) for r in results), [r.reason for r in results]
    # six concurrent requests were generated together, not one by one
    assert batches == [[6]]
    assert client.metrics["calls"] == 6 and client.metrics["completion_tokens"] > 0
    assert [r.text for r in cached] == [r.text for r in results] and all(r.cached for r in cached)


def test_parse_takes_no_rhetorical_question_for_an_answer() -> None:
    assert parse("So why do we get fat? Because insulin tells the body to store it.", ANSWERS)[0] is None


def test_parse_bullets_under_numbered_answers_stay_in_their_answer() -> None:
    value, error = parse("1. Two reasons:\n- insulin falls\n- fat burns\n2. Yes, it is safe.", ANSWERS)
    assert error is None
    assert value == [
        {"answer": "Two reasons: - insulin falls - fat burns", "number": 1},
        {"answer": "Yes, it is safe.", "number": 2},
    ]


def test_run_many_inside_a_running_loop_returns_results_and_raises_errors() -> None:
    import asyncio

    async def inside() -> None:
        with FakeOpenAI(echo) as srv:
            assert len(LLMClient(params(srv)).run_many(requests(2))) == 2
        with FakeOpenAI(echo, faults={"500": 1.0}) as srv, pytest.raises(llm.LLMUnavailable):
            LLMClient(params(srv, retries=0)).run_many(requests(2))

    asyncio.run(inside())
