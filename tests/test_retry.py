"""The shared politeness helpers: backoff bounds, even spacing, retries only on transient errors."""

from __future__ import annotations

import random

import pytest

from engine.retry import RateLimiter, backoff_delay, call_with_retries


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
