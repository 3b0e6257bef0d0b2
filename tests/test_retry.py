"""The shared politeness helpers: backoff bounds, even spacing, retries only on transient errors;
and which LLM failures the client retries, over real HTTP to the fake server."""

from __future__ import annotations

import random
import time

import pytest

import engine.llm.client as llm
from engine.errors import LLMUnavailable
from engine.llm.client import LLMClient, LLMRequest
from engine.recipe.shared import LLMParams
from engine.retry import RateLimiter, backoff_delay, call_with_retries
from fakes.openai_server import ErrorReply, FakeOpenAI


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(a, base=1.0, cap=8.0, rng=rng) for a in range(6)]
    assert 0.5 <= delays[0] <= 1.0 and 4.0 <= delays[3] <= 8.0 and all(d <= 8.0 for d in delays)


def test_rate_limiter_spaces_calls_on_a_fake_clock() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
    assert waits == pytest.approx([0.25, 0.25, 0.25, 0.25])


def test_call_with_retries_retries_transient_errors_then_gives_up() -> None:
    calls, slept = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("slow")
        return "ok"

    assert call_with_retries(flaky, lambda e: isinstance(e, TimeoutError), 3, 0.1, slept.append) == "ok"
    assert len(calls) == 3 and len(slept) == 2 and slept[1] > slept[0] / 2
    with pytest.raises(TimeoutError):
        call_with_retries(lambda: (_ for _ in ()).throw(TimeoutError()), lambda e: True, 2, 0.1, slept.append)
    before = len(slept)
    with pytest.raises(ValueError):  # not transient: raised at once, no wait
        call_with_retries(lambda: int("x"), lambda e: isinstance(e, TimeoutError), 5, 0.1, slept.append)
    assert len(slept) == before


# -- which LLM failures are retried: real HTTP to the fake server through litellm ----------------

QUESTION = LLMRequest("q1", [{"role": "user", "content": "Why do we get hungry at noon?"}])


@pytest.fixture()
def llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def client(api_base: str, retries: int = 2) -> LLMClient:
    params = LLMParams(model="openai/fake", api_base=api_base, temperature=0.0, max_tokens=50, retries=retries)
    return LLMClient(params.model_copy(update={"reask": 0, "timeout": 5.0, "requests_per_minute": 0}))


def answer(body: dict) -> str:
    return "An answer."


# A request the provider will never accept, answered as OpenAI answers it: one request, then the
# item is recorded failed with the provider's words (the run goes on).
NEVER_ACCEPTED = [
    ErrorReply(400, "Unrecognized request argument supplied: frobnicate"),
    ErrorReply(
        400,
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9120 tokens.",
        code="context_length_exceeded",
    ),
    ErrorReply(400, "Your request was rejected as a result of our safety system.", code="content_policy_violation"),
    ErrorReply(413, "Payload Too Large: the request body exceeds 32 MB"),
    ErrorReply(422, "Unprocessable Entity: messages[0].content must be a string"),
]


@pytest.mark.parametrize("reply", NEVER_ACCEPTED, ids=lambda r: f"{r.status}-{r.code or 'plain'}")
def test_a_request_the_provider_rejects_is_sent_once(reply: ErrorReply, llm_env: None) -> None:
    with FakeOpenAI(answer, error=reply) as srv:
        [result] = client(srv.base_url).run_many([QUESTION])
    assert srv.calls == 1, f"{reply.status} was retried"
    assert not result.ok and reply.message[:30] in (result.reason or "")


# Nothing this run sends can succeed: the step stops at the first answer, with the hint.
@pytest.mark.parametrize(
    "reply",
    [
        ErrorReply(401, "Incorrect API key provided: {authorization}", code="invalid_api_key"),
        ErrorReply(403, "Project does not have access to model gpt-4o"),
        ErrorReply(404, "The model `gpt-9` does not exist or you do not have access to it.", code="model_not_found"),
    ],
    ids=lambda r: str(r.status),
)
def test_a_refusal_of_every_call_stops_after_one_request(reply: ErrorReply, llm_env: None) -> None:
    with FakeOpenAI(answer, error=reply) as srv:
        with pytest.raises(LLMUnavailable, match="OPENAI_API_KEY"):
            client(srv.base_url).run_many([QUESTION])
    assert srv.calls == 1


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503])
def test_transient_statuses_are_retried_then_recorded(status: int, llm_env: None) -> None:
    busy = ErrorReply(status, "try again later", when=lambda body: "noon" in str(body["messages"]))
    other = LLMRequest("q2", [{"role": "user", "content": "Why do we sleep at night?"}])
    with FakeOpenAI(answer, error=busy) as srv:
        failed, ok = client(srv.base_url, retries=2).run_many([QUESTION, other])
    assert srv.calls == 3 + 1  # the first request asked 3 times (retries: 2), the other once
    assert ok.ok and not failed.ok and (failed.reason or "").startswith("gave up after 3 attempt(s)")


def unusable_endpoints(port: int) -> list[str]:
    return [
        f"http://user:secret-pass@127.0.0.1:{port}/v1",  # credentials in the URL beside the API key
        f"ftp://127.0.0.1:{port}/v1",  # not HTTP
        f"127.0.0.1:{port}/v1",  # no scheme
        "http://[::1/v1",  # not a URL
        "http://127.0.0.1:99999/v1",  # no such port
        "http:///v1",  # no host
    ]


def test_an_unusable_api_base_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: retried 6 times over 34 s. Real backoff here (no test speed-up): under 1 s each."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(answer) as srv:
        port = int(srv.base_url.rsplit(":", 1)[1].split("/")[0])
        client(srv.base_url).run_many([QUESTION])  # litellm's first import is not what we measure
        for api_base in unusable_endpoints(port):
            started = time.perf_counter()
            with pytest.raises(LLMUnavailable, match="api_base") as info:
                client(api_base, retries=2).run_many([QUESTION])
            seconds = time.perf_counter() - started
            assert seconds < 1.0, f"{api_base}: {seconds:.2f} s"
            assert "secret-pass" not in str(info.value)
        assert srv.calls == 1  # only the warm-up reached the server


def test_a_model_without_its_provider_stops_the_step_at_once(llm_env: None) -> None:
    """litellm cannot route `gpt4o-typo` at all: every call would fail, so none is recorded."""
    with FakeOpenAI(answer) as srv:
        params = LLMParams(model="gpt4o-typo", api_base=srv.base_url, retries=2, reask=0)
        with pytest.raises(LLMUnavailable, match="llm.model"):
            LLMClient(params).run_many([QUESTION])
    assert srv.calls == 0
