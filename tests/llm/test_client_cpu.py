"""What the client still gets right while litellm does less per call (issue 16, goal 3: the
client's CPU per call): openai/ requests sent by litellm's own HTTP handler rather than the
OpenAI SDK, replies priced by litellm's rates function, fewer garbage collections during a
fan-out, and replies committed half a second at a time.

Real HTTP to the fake server and real DuckDB stores throughout; the SDK's way is the reference,
chosen the way a user would (the variable set to false in the environment).
"""

from __future__ import annotations

import gc
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import LLMUnavailable
from engine.llm.client import FANOUT_GC_THRESHOLD, CacheWriter, LLMClient, LLMRequest, LLMResult
from engine.llm.providers import (
    LITELLM_WITHOUT_SDK,
    LOCAL_SERVER_KEY,
    load_litellm,
    sends_without_sdk,
    settings_without_sdk,
)
from engine.pipeline.store import Store
from fakes.openai_server import ErrorReply, FakeOpenAI, last_user_message
from helpers.llm_params import fake_params

KEY = "sk-test-cpu3-0123456789abcdefghijklmnopqrstuvwxyz"  # a key shaped like OpenAI's
PRICED = "openai/gpt-4o-mini"  # priced by litellm's bundled cost map, served by the fake


@pytest.fixture(autouse=True)
def own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv(LITELLM_WITHOUT_SDK, raising=False)
    for name in ("OPENAI_ORGANIZATION", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)


def _through_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference way: litellm told to send through the OpenAI SDK, as a user would."""
    monkeypatch.setenv(LITELLM_WITHOUT_SDK, "false")


def _answer(body: dict) -> str:
    ask = last_user_message(body)
    return f"About {ask}: " + " ".join(["fasting"] * (len(ask) % 7 + 1)) + "."


def _details(body: dict) -> dict:
    """Usage details a real provider reports on some replies: cached prompt tokens, reasoning."""
    words = len(last_user_message(body).split())
    details: dict = {}
    if words % 2:
        details["prompt_tokens_details"] = {"cached_tokens": 1}
    if words % 3 == 0:
        details["completion_tokens_details"] = {"reasoning_tokens": 2}
    return details


def _requests(n: int, prefix: str = "item") -> list[LLMRequest]:
    # prompts of different lengths, so replies of one run have different usage
    return [LLMRequest(f"r{i}", [{"role": "user", "content": f"{prefix} {i} " + "word " * (i % 5)}]) for i in range(n)]


def _run(srv: FakeOpenAI, store: Path, requests: list[LLMRequest], **overrides: Any) -> tuple[list[LLMResult], dict]:
    params = fake_params(srv, **{"model": PRICED, "reask": 0, **overrides})
    with Store(store) as opened:
        client = LLMClient(params, opened.item_cache("llm"))
        results = client.run_many(requests)
    return results, client.metrics


def _seen(result: LLMResult) -> tuple:
    return (result.id, result.ok, result.text, result.value, result.reason, result.usage)


def _user_agents(srv: FakeOpenAI) -> set[str]:
    return {h.get("user-agent", "").split("/")[0] for h in srv.headers}


def test_requests_leave_without_the_sdk_and_come_back_exactly_as_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same bodies sent, same replies, usage and cost read (cached and reasoning tokens
    included), same metrics; only the sender differs."""
    requests = _requests(24)
    with FakeOpenAI(_answer, usage_details=_details) as through_sdk:
        _through_sdk(monkeypatch)
        reference, reference_metrics = _run(through_sdk, tmp_path / "sdk.duckdb", requests)
    monkeypatch.delenv(LITELLM_WITHOUT_SDK)
    with FakeOpenAI(_answer, usage_details=_details) as without_sdk:
        results, metrics = _run(without_sdk, tmp_path / "own.duckdb", requests)

    assert _user_agents(through_sdk) == {"AsyncOpenAI"} and _user_agents(without_sdk) == {"litellm"}
    assert all(r.ok for r in results) and [_seen(r) for r in results] == [_seen(r) for r in reference]
    # the running cost total is rounded at each reply, so its last digit depends on their order
    assert {**metrics, "cost": 0} == {**reference_metrics, "cost": 0}
    assert metrics["cost"] == pytest.approx(reference_metrics["cost"], abs=1e-7) and metrics["cost"] > 0
    bodies = sorted(json.dumps(b, sort_keys=True) for b in without_sdk.requests)
    assert bodies == sorted(json.dumps(b, sort_keys=True) for b in through_sdk.requests)
    assert all(h["authorization"] == f"Bearer {KEY}" for h in without_sdk.headers)


@pytest.mark.parametrize("sender", ["sdk", "own"])
def test_failures_are_told_apart_as_through_the_sdk(sender: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate limits, server errors, timeouts and unreadable 200 bodies are retried until the
    call succeeds; a refused key stops the run with the key scrubbed from the message."""
    if sender == "sdk":
        _through_sdk(monkeypatch)
    faults = {"429": 0.15, "500": 0.15, "garbage": 0.2, "timeout": 0.05}
    with FakeOpenAI(_answer, faults=faults, seed=7, timeout_sleep=1.5) as srv:
        client = LLMClient(fake_params(srv, reask=0, retries=10, timeout=0.5, max_concurrency=6))
        results = client.run_many(_requests(40))
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    assert _user_agents(srv) == {"AsyncOpenAI" if sender == "sdk" else "litellm"}
    assert srv.faults_injected.get("garbage", 0) > 0 and client.metrics["retries"] >= sum(srv.faults_injected.values())

    echo = ErrorReply(401, "Incorrect API key provided: {authorization}", "invalid_api_key")
    with FakeOpenAI(_answer, error=echo) as srv, pytest.raises(LLMUnavailable) as refused:
        LLMClient(fake_params(srv, reask=0, retries=5, max_concurrency=1)).run_many(_requests(3))
    assert srv.calls == 1  # refused at once: not retried
    assert KEY not in str(refused.value) and "[REDACTED" in str(refused.value)


@pytest.mark.parametrize("status", [400, 403, 404, 408, 409, 413, 422, 425, 429, 500, 502, 503])
def test_each_error_status_is_retried_or_not_as_through_the_sdk(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Error bodies shaped like OpenAI's ("type": "invalid_request_error" below 500): litellm's
    own handler names a 408/409/425/429 a BadRequestError, yet each status is retried, or
    not, exactly as through the SDK, and a retried one's reason names its status."""

    def outcome() -> tuple[int, bool, str]:
        busy = ErrorReply(status, "try again later", when=lambda body: "item 0 " in last_user_message(body))
        with FakeOpenAI(_answer, error=busy) as srv:
            try:
                failed, ok = LLMClient(fake_params(srv, reask=0, retries=2, max_concurrency=1)).run_many(_requests(2))
            except LLMUnavailable as refused:
                return srv.calls, True, str(refused)
        assert ok.ok and not failed.ok
        return srv.calls, False, failed.reason or ""

    calls, refused, reason = outcome()
    _through_sdk(monkeypatch)
    sdk_calls, sdk_refused, _ = outcome()
    assert (calls, refused) == (sdk_calls, sdk_refused)
    retried = status in (408, 409, 425, 429) or status >= 500
    assert calls == (3 + 1 if retried else 1 + int(not refused))
    if retried:
        assert reason.startswith("gave up after 3 attempt(s)") and ("Error" in reason.split(":")[1])
        if "BadRequestError" in reason.split(":")[1]:
            assert f"(HTTP {status})" in reason


def test_the_key_is_written_to_no_file(tmp_path: Path) -> None:
    """Replies committed, and failures whose error body echoes the request's Authorization
    header: the key appears in no file of the store's folder and in no result."""
    one = "item 1 "
    echo = ErrorReply(500, "upstream failed for {authorization}", when=lambda body: one in last_user_message(body))
    with FakeOpenAI(_answer, error=echo) as srv:
        results, _ = _run(srv, tmp_path / "store.duckdb", _requests(12), retries=1)
    assert [r.ok for r in results].count(False) == 1 and "[REDACTED" in str(results[1].reason)
    assert _user_agents(srv) == {"litellm"}
    assert all(KEY not in repr(r) for r in results)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_the_sdk_keeps_the_requests_it_would_send_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = load_litellm()
    local = "http://127.0.0.1:8000/v1"
    assert sends_without_sdk(PRICED, local, {})
    assert sends_without_sdk("openai/llama3", local, {"api_key": LOCAL_SERVER_KEY})
    assert not sends_without_sdk("vertex_ai/gemini-1.5-pro", None, {})  # not an openai/ request
    monkeypatch.setenv("OPENAI_ORG_ID", "org-123")  # the SDK adds a header of its own
    assert not sends_without_sdk(PRICED, local, {})
    monkeypatch.delenv("OPENAI_ORG_ID")
    monkeypatch.setattr(litellm, "organization", "org-456")
    assert not sends_without_sdk(PRICED, local, {})
    monkeypatch.setattr(litellm, "organization", None)
    monkeypatch.setenv("OPENAI_API_KEY", " ")  # no key: the SDK's "Missing credentials" is the message
    assert not sends_without_sdk(PRICED, "https://api.example.invalid/v1", {})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv(LITELLM_WITHOUT_SDK, "false")  # the user's choice stands
    assert not sends_without_sdk(PRICED, local, {})

    monkeypatch.delenv(LITELLM_WITHOUT_SDK)
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-789")
    with FakeOpenAI(_answer) as srv:
        [result] = LLMClient(fake_params(srv, model=PRICED, reask=0)).run_many(_requests(1))
    assert result.ok and _user_agents(srv) == {"AsyncOpenAI"}
    assert srv.headers[0].get("openai-project") == "proj-789"


def test_the_provider_is_worked_out_once_per_run_as_litellm_would_each_call() -> None:
    local = "http://127.0.0.1:8000/v1"
    for model, bare in ((PRICED, "gpt-4o-mini"), ("openai/meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B")):
        settings = settings_without_sdk({"model": model, "api_base": local, "max_retries": 0, "timeout": 5})
        assert settings == {"model": bare, "custom_llm_provider": "openai", "api_base": local, "timeout": 5}
    unplaced = {"model": "no-such-provider/x", "max_retries": 0}
    assert settings_without_sdk(unplaced) == unplaced  # the call itself says what is wrong
    with FakeOpenAI(_answer) as srv:
        client = LLMClient(fake_params(srv, model="openai/meta-llama/Llama-3.1-8B", reask=0))
        results = client.run_many(_requests(3))
    assert all(r.ok for r in results) and {b["model"] for b in srv.requests} == {"meta-llama/Llama-3.1-8B"}


@pytest.fixture
def everyone_listening() -> Iterator[None]:
    """A callback registered with litellm: it then prices every reply in full, as it always did."""
    litellm = load_litellm()
    from litellm.integrations.custom_logger import CustomLogger

    before = list(litellm.callbacks)
    litellm.callbacks = [*before, CustomLogger()]
    try:
        yield
    finally:
        litellm.callbacks = before


def _pricing() -> Any:
    load_litellm()
    from litellm.litellm_core_utils.litellm_logging import Logging

    return Logging.response_cost_calculator.pricing  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", [PRICED, "openai/not-a-priced-model"])
def test_replies_are_priced_as_litellms_full_calculation_prices_them(
    model: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every reply's cost equals the full calculation's (a callback registered makes litellm
    price in full), across usages with and without cached and reasoning tokens; an unpriced
    model costs nothing either way."""
    requests = _requests(150)
    with FakeOpenAI(_answer, usage_details=_details) as srv:
        by_rates_before = _pricing().by_rates
        results, metrics = _run(srv, tmp_path / "rates.duckdb", requests, model=model, max_concurrency=20)
        by_rates = _pricing().by_rates - by_rates_before
        request.getfixturevalue("everyone_listening")
        full, full_metrics = _run(srv, tmp_path / "full.duckdb", requests, model=model, max_concurrency=20)
    assert _pricing().by_rates - by_rates_before == by_rates  # nothing priced by rates while a callback listens
    assert all(r.ok for r in results) and [r.id for r in results] == [r.id for r in full]
    for mine, reference in zip(results, full, strict=True):
        assert math.isclose(mine.usage["cost"], reference.usage["cost"], rel_tol=1e-9, abs_tol=1e-15), mine.id
        assert mine.usage["tokens"] == reference.usage["tokens"]
    # the running total is rounded to 8 places at each reply, in the order the replies came
    assert metrics["cost"] == pytest.approx(full_metrics["cost"], abs=len(requests) * 1e-8)
    if model == PRICED:
        assert metrics["cost"] > 0 and by_rates > 100  # the shortcut served most replies
        assert len({r.usage["cost"] for r in results}) > 5  # and the usages differed
    else:
        assert metrics["cost"] == 0 and by_rates == 0  # nothing agreed to learn from


def test_a_model_priced_anew_mid_process_is_charged_its_new_prices(tmp_path: Path) -> None:
    litellm = load_litellm()
    name = "openai/recipe-cpu3-test-model"

    def price(input_cost: float) -> None:
        entry = {"input_cost_per_token": input_cost, "output_cost_per_token": 2 * input_cost}
        litellm.register_model({name: {**entry, "litellm_provider": "openai", "mode": "chat"}})

    try:
        with FakeOpenAI(_answer) as srv:
            price(1e-6)
            first, _ = _run(srv, tmp_path / "a.duckdb", _requests(80), model=name)
            price(1e-5)
            second, _ = _run(srv, tmp_path / "b.duckdb", _requests(80), model=name)
    finally:
        litellm.model_cost.pop(name, None)
    for cheap, dear in zip(first, second, strict=True):
        u = cheap.usage
        assert math.isclose(u["cost"], u["prompt_tokens"] * 1e-6 + u["completion_tokens"] * 2e-6, rel_tol=1e-9)
        assert math.isclose(dear.usage["cost"], 10 * u["cost"], rel_tol=1e-9)


def test_the_collector_runs_less_often_during_a_fan_out_and_as_before_afterwards() -> None:
    before = gc.get_threshold()
    during: list[int] = []

    def answer(body: dict) -> str:
        during.append(gc.get_threshold()[0])  # the fake serves in this process: same collector
        return _answer(body)

    with FakeOpenAI(answer) as srv:
        results = LLMClient(fake_params(srv, reask=0)).run_many(_requests(10))
        assert all(r.ok for r in results) and gc.get_threshold() == before
        with FakeOpenAI(answer, error=ErrorReply(401, "no")) as refusing, pytest.raises(LLMUnavailable):
            LLMClient(fake_params(refusing, reask=0)).run_many(_requests(3))
    assert gc.get_threshold() == before  # a stopped run puts them back too
    assert len(during) == 10 and set(during) == {max(FANOUT_GC_THRESHOLD, before[0])}


def test_replies_arriving_within_half_a_second_share_one_commit(tmp_path: Path) -> None:
    """20 replies spread over ~0.3 s: one commit (DuckDB's now() is the transaction's start,
    so the rows of one commit share their `created`); with 0.2 s there were two."""
    assert CacheWriter.FLUSH_SECONDS == 0.5
    release = threading.Event()

    def answer(body: dict) -> str:
        index = int(last_user_message(body).split()[1])
        release.wait(0.3 * index / 19)  # reply i comes back i/19 * 0.3 s after it was asked
        return _answer(body)

    with FakeOpenAI(answer) as srv:
        results, _ = _run(srv, tmp_path / "store.duckdb", _requests(20), max_concurrency=20)
    assert all(r.ok for r in results)
    with Store(tmp_path / "store.duckdb") as store:
        [(commits,)] = store.execute('SELECT count(DISTINCT created) FROM "_cache_llm"')
    assert commits == 1
