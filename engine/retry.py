"""Retries and politeness shared by every network boundary (YouTube, LLM providers).

The clock and sleep are injectable so tests can prove backoff and rate limits without waiting.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt)).

    Full jitter (rather than a fixed doubling) keeps many workers that failed together from
    retrying in lockstep against a provider that just said 429.
    """
    ceiling = min(cap, base * (2**attempt))
    return (rng or random).uniform(0.5 * ceiling, ceiling)


class RateLimiter:
    """At most `rate` acquisitions per second, spaced evenly (rate <= 0 means unlimited).

    Thread-safe; `clock` and `sleep` default to real time and can be replaced in tests.
    """

    def __init__(
        self, rate: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Claim the next slot; returns how long the caller must wait before using it."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self.sleep(wait)

    async def acquire_async(self) -> None:
        import asyncio  # only LLM steps need it; planning imports this module too

        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


def call_with_retries(
    fn: Callable[[], T],
    transient: Callable[[BaseException], bool],
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
    limiter: RateLimiter | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> T:
    """`fn()` behind the rate limiter, retried with backoff while `transient(error)` says so.

    Raises the last error when it is not transient or the retries are spent; `on_retry(error,
    attempt, delay)` is told before each wait (for logs and tests).
    """
    attempt = 0
    while True:
        if limiter is not None:
            limiter.acquire()
        try:
            return fn()
        except Exception as e:
            if not transient(e) or attempt >= retries:
                raise
            delay = backoff_delay(attempt, base=backoff, rng=rng)
            if on_retry is not None:
                on_retry(e, attempt, delay)
            sleep(delay)
            attempt += 1
