"""What keeps a fan-out's replies from arriving in bursts the event loop cannot keep up with
(issue 16).

The problem: the requests of a run are sent together, so their replies come back together,
and the loop reads such a burst one reply after the other, sending each reply's successor as
it is read. The successors leave as fast as the loop reads (a few ms apart), so the next round
comes back as the same tight burst, and so on for the whole run: nothing spreads it again, and
a delay of the loop (a garbage collection, another process taking the CPU) only tightens it.
At 100 calls in flight and 1 s a call, a reply waited ~0.2 s on average for the loop, although
the loop was idle 60% of the time.

The remedy: requests leave at least PACING_FACTOR times a call's loop time apart (`Pacer`),
so a round's replies come back spread out and each is read as it arrives; the loop time of a
call is measured on the calls this process made (`LoopTime`, `LoopTimed`). The first round is
spread over about max_concurrency gaps (0.5 s at 100 in flight here), which costs about half
of that once per run; afterwards requests wait for the pacer only where replies bunched.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

# Requests leave at least this many times a call's loop time apart: the loop reads a round's
# replies with time to spare, and a bunch that formed is spread again at the next send.
PACING_FACTOR = 1.5
# ... and at most this far apart, whatever was measured (a process whose other threads hold the
# GIL makes a call's steps look longer than the loop needs): the first round of 100 slots is
# spread over 2 s at most.
MAX_GAP = 0.02


class LoopTime:
    """How long the event loop spends on one litellm call: the steps of preparing the request
    and reading the reply, measured on the calls this process made (a property of litellm's
    version and of the machine, so one estimate serves every run of the process)."""

    DEFAULT = 0.0035  # seconds: measured on a 2-core machine (issue 16); for a process's first run
    SAMPLES = 64

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.SAMPLES)
        self._first_seen = False

    def record(self, seconds: float) -> None:
        if not self._first_seen:  # a process's first call sets litellm up: not a typical one
            self._first_seen = True
            return
        self._recent.append(seconds)

    def typical(self) -> float:
        """The median of the recent calls (a call that a garbage collection held moves it little)."""
        if not self._recent:
            return self.DEFAULT
        ordered = sorted(self._recent)
        return ordered[len(ordered) // 2]


LOOP_TIME = LoopTime()


class LoopTimed:
    """`await LoopTimed(coro)` is `await coro`, and adds up in `spent` how long each of its steps
    held the event loop (the time it waits for the network is not counted)."""

    __slots__ = ("coro", "spent")

    def __init__(self, coro: Coroutine[Any, Any, Any]):
        self.coro, self.spent = coro, 0.0

    def __await__(self) -> Any:
        coro, clock = self.coro, time.perf_counter
        value: Any = None
        error: BaseException | None = None
        while True:
            started = clock()
            try:
                waiting_on = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as done:
                self.spent += clock() - started
                return done.value
            finally:
                value = error = None
            self.spent += clock() - started
            try:
                value = yield waiting_on
            except GeneratorExit:  # the awaiting task was closed: so is the call
                coro.close()
                raise
            except BaseException as e:  # noqa: BLE001 - handed to the call (cancellation, timeouts)
                error = e


class Pacer:
    """Requests at least `gap` seconds apart: `await wait_turn()` before each.

    A request that finds the pacer free goes at once; the others queue and are let go one per
    gap, in order, counted from the moment the previous one went: after the loop was held up
    (a garbage collection, another process on the CPU) the queued requests still leave spaced,
    rather than all at once for the turns they missed.

    How many may queue: the whole first round (`slots` requests, sent together otherwise);
    after it, a tenth of a round. More waiting than that means the replies come faster than
    the loop can read them even spaced (a fast server, many slots): the loop, not the
    spacing, sets the pace then, and a request that waited would only leave the loop idle,
    so it goes at once (at 100 slots and 0.1 s a call, queueing them all made a run 1.5x
    slower).
    """

    def __init__(self, gap: float, slots: int, clock: Callable[[], float] = time.monotonic):
        self.gap, self.slots, self.clock = gap, max(1, slots), clock
        self.later_queue = max(2, self.slots // 10)
        self._asked = 0  # requests so far (the first `slots` are the first round)
        self._last = -math.inf  # when the last request went
        self._queue: deque[asyncio.Future] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def wait_turn(self) -> None:
        if self.gap <= 0:
            return
        self._asked += 1
        now = self.clock()
        if not self._queue and now >= self._last + self.gap:
            self._last = now
            return
        if len(self._queue) >= (self.slots if self._asked <= self.slots else self.later_queue):
            return  # the loop cannot keep up: waiting would only leave it idle
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        self._queue.append(turn)
        self._arm(loop)
        await turn

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._queue:
            self._timer = loop.call_later(max(0.0, self._last + self.gap - self.clock()), self._let_one_go, loop)

    def _let_one_go(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():  # a cancelled request (Ctrl-C, a run stopped) gives its turn up
                turn.set_result(None)
                self._last = self.clock()
                break
        self._arm(loop)
