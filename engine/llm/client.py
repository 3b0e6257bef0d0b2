"""The one LLM client of the engine: litellm underneath, any provider (engine.llm.providers).

Why this shape: a generation step sends hundreds of independent calls. They fan out on one
asyncio loop: `max_concurrency` workers take requests from a queue (a semaphore bounds the
calls in flight, `requests_per_minute` a RateLimiter); transient failures (429, 5xx,
timeouts, broken connections, garbage bodies) are retried with jittered exponential backoff.
Every response is committed to the store's "llm" item cache the moment it arrives, keyed by
digest(model, messages, params), so a run killed at any point and started again never pays
for the same call twice. API keys stay in the
environment: litellm reads them there and they are never part of a key or a file.

The event loop does nothing slow itself (issue 16: at 100 calls in flight, every millisecond a
call holds the loop delays the other 99): replies are committed by one writer thread
(`CacheWriter`), those arriving within FLUSH_SECONDS of each other in one commit, and a call
counts as answered only once its reply is committed (the worker does not wait for that: it
sends its next request at once); the cache is read once per run for every request's first
round (`get_many`), not once per call; litellm prepares openai requests on the loop rather
than on a thread (providers.InlinePreparation), and sends them with its own HTTP handler rather
than the OpenAI SDK (providers.sends_without_sdk); what every call hands litellm besides its
messages is worked out once per run; litellm prices replies by its rates, looks models up
cached, and httpx skips its cookie jar for replies without cookies (engine.llm.litellm_trims);
the garbage collector runs less often during a fan-out.
Requests leave spaced by more than the loop spends on a call (engine.llm.pacing), so replies do
not come back in bursts the loop reads one by one.

A reply is validated before it is cached, and the cache entry carries the verdict (`valid`,
`error`). A cached reply is read again by the request's reader before it is used, so an
invalid one never becomes an ok result. An invalid cached reply may still stand as the
earlier turn of a re-ask conversation (the follow-up's reply is cached under the conversation
that contains it), but one that would be the item's final word is asked again: whenever a
step runs again (--retry-failed, --force, a changed config), items that ended invalid are
re-asked while every valid reply is reused.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import TRANSIENT_STATUS, CallFailed, LLMUnavailable, bad_endpoint, http_status, is_transient
from engine.llm.pacing import LOOP_TIME, MAX_GAP, PACING_FACTOR, LoopTimed, Pacer
from engine.llm.providers import (
    InlinePreparation,
    LitellmProvider,
    Provider,
    key_hint,
    load_litellm,
    prepares_inline,
    provider_for,
    sends_without_sdk,
    settings_without_sdk,
)
from engine.pipeline.hashing import digest
from engine.redact import redact
from engine.retry import RateLimiter, backoff_delay

if TYPE_CHECKING:
    from engine.pipeline.progress import Progress
    from engine.pipeline.store import ItemCache
    from engine.recipe.shared import LLMParams

log = logging.getLogger("engine.llm.client")

# Seconds of the first retry's backoff ceiling; tests lower it to keep fault runs fast.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


# Turns a reply's text into the value the step uses: (value, None), or (None, why it is unusable).
Reader = Callable[[str], tuple[Any, "str | None"]]


@dataclass(frozen=True)
class LLMRequest:
    id: str
    messages: list[dict]
    schema: dict | None = None  # JSON Schema of the expected JSON value; None = free text (prose)
    # The step's own reader, when schema validation alone cannot tell a usable reply; by default
    # a schema'd reply is parsed against it and free text must be prose (json_reply.read_prose).
    read: Reader | None = field(default=None, compare=False, repr=False)

    def reader(self) -> Reader:
        from engine.llm.json_reply import parse, read_prose

        if self.read is not None:
            return self.read
        schema = self.schema
        return read_prose if schema is None else (lambda text: parse(text, schema))


@dataclass
class Reply:
    """One call's reply, read: `error` is None when `value` is usable."""

    text: str
    value: Any
    error: str | None
    cached: bool
    usage: dict
    # done once the reply is committed to the item cache (None: nothing to commit, or committed)
    committed: asyncio.Future | None = None


@dataclass
class LLMResult:
    id: str
    ok: bool
    value: Any
    text: str
    reason: str | None
    cached: bool = False
    usage: dict = field(default_factory=dict)


def _refused(error: BaseException) -> bool:
    """No call of this run can succeed: bad key, no key, unknown model, unusable api_base.

    A missing key and an invalid or credential-bearing api_base reach us wrapped as a 500-ish
    InternalServerError, so the message and the chain are checked too; retrying them would only
    waste the backoff budget.
    """
    if getattr(error, "status_code", None) in (401, 403, 404) or bad_endpoint(error):
        return True
    message = str(error)
    return (
        "AuthenticationError" in type(error).__name__
        or "Missing credentials" in message
        or "LLM Provider NOT provided" in message  # litellm: a model name without its provider
    )


def run_to_end(coro: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run, with its event loop made while Ctrl-C is held back.

    A KeyboardInterrupt raised inside the loop's constructor leaves a half-built loop whose
    __del__ then prints an "Exception ignored ... no attribute '_signal_handlers'" traceback
    under the one-line "interrupted" message (seen in CI). Held back for those microseconds, it
    is raised right after, where the run handles it as any other Ctrl-C."""
    if sys.version_info < (3, 11) or threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)  # no Runner(loop_factory) before 3.11; only the main thread gets SIGINT
    with asyncio.Runner(loop_factory=loop_made_without_interrupts) as runner:
        return runner.run(coro)


def loop_made_without_interrupts() -> asyncio.AbstractEventLoop:
    # Python's own handler, not the signal mask: a SIGINT the OS delivered just before (its flag
    # set, its Python handler not run yet) would still raise inside the constructor with the
    # mask; with the handler swapped, it is noted and raised once the loop is whole.
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: noted.append(signum))
    try:
        loop = asyncio.new_event_loop()
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        loop.close()
        raise KeyboardInterrupt
    return loop


# Allocations (less deallocations) between two collections of the youngest generation during a
# fan-out; Python's default is 700. See fewer_collections.
FANOUT_GC_THRESHOLD = 5000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The cyclic garbage collector runs less often while a fan-out is under way (issue 16).

    At 100 calls in flight some 50,000 objects of calls not yet answered are alive, and every
    collection walks those of its generations: with the default threshold, ~100 young and ~10
    middle collections per 1,000 calls, 0.13 ms of CPU per call in all. A threshold of 5,000
    makes them seven times rarer (0.05 ms per call, each young collection ~5 ms); the garbage
    that only the collector frees (reference cycles) waits at most that many allocations longer.
    The previous thresholds come back when the fan-out ends.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], FANOUT_GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class CacheWriter:
    """Commits replies to the item cache on a thread of its own; the future `submit(...)` returns
    is done once the reply is committed (the client counts a call as done only then, so a kill
    loses no call it counted).

    One DuckDB commit costs milliseconds of fsync and ~2 ms of CPU; done on the event loop for
    each reply, that stalled every other call in flight. Here the replies that arrive within
    FLUSH_SECONDS of each other go into one statement, one commit.

    The loop and the thread meet once per batch, not once per reply (issue 16): a reply is
    appended to a list, and only the first of a batch wakes the thread; the futures of a batch
    are settled by one callback. Each wake-up costs the event loop a thread switch and a pass,
    and at 100 replies a second they added up.
    """

    BATCH = 500  # rows per statement at most
    # How long the first reply of a batch waits for others. A commit costs ~2 ms of CPU
    # whatever its size, and replies arrive at concurrency / latency per second (20 per second
    # at 20 in flight and 1 s each), so without a wait most commits would hold one reply. The
    # wait holds no request slot (the call has returned), only the moment the call counts as done.
    # Half a second (issue 16): at 100 in flight and 1 s a call, ~50 replies a commit and 0.2 ms
    # of the writer's CPU per call, against ~20 and 0.33 ms at 0.2 s; what a hard kill (SIGKILL,
    # power loss) can lose is at most that half second of replies (Ctrl-C commits them all).
    FLUSH_SECONDS = 0.5

    def __init__(self, cache: ItemCache, loop: asyncio.AbstractEventLoop):
        self.cache, self.loop = cache, loop
        self._lock = threading.Lock()  # guards _waiting and the two events' meaning
        self._waiting: list[tuple[str, dict, asyncio.Future]] = []
        self._wake = threading.Event()  # a batch has begun
        self._now = threading.Event()  # commit the batch without waiting for more
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llm-cache-writer", daemon=True)
        self._thread.start()

    def submit(self, key: str, entry: dict) -> asyncio.Future | None:
        """Queue a reply for commit: the future is done once it is committed (None: committed
        already, here and now, because the run has stopped)."""
        if self._closed:  # a call still finishing after the run stopped: commit it here and now
            self.cache.put(key, entry)
            return None
        done = self.loop.create_future()
        with self._lock:
            self._waiting.append((key, entry, done))
            if len(self._waiting) == 1:
                self._wake.set()
        return done

    def flush_now(self) -> None:
        """Commit what is queued without waiting for more (nothing else is coming soon)."""
        with self._lock:
            if self._waiting:  # nothing waiting: nothing to commit
                self._now.set()

    def close(self) -> None:
        """Commit what is queued and stop the thread (blocking: called once, at the end)."""
        with self._lock:
            self._closed = True
            self._now.set()
            self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._now.wait(self.FLUSH_SECONDS)  # others join the batch meanwhile
            with self._lock:
                batch, self._waiting = self._waiting, []
                closing = self._closed
                self._wake.clear()
                if not closing:
                    self._now.clear()
            for first in range(0, len(batch), self.BATCH):
                self._commit(batch[first : first + self.BATCH])
            if closing:
                return

    def _commit(self, batch: list[tuple[str, dict, asyncio.Future]]) -> None:
        error: BaseException | None = None
        try:
            self.cache.put_many([(key, entry) for key, entry, _ in batch])
        except BaseException as e:  # noqa: BLE001 - handed to every waiting call, raised there
            error = e
        futures = [done for _, _, done in batch]

        def settle() -> None:
            for done in futures:
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class LLMClient:
    """Runs many requests with one model's settings; see the module docstring."""

    def __init__(
        self,
        params: LLMParams,
        cache: ItemCache | None = None,
        metrics: dict | None = None,
        context: dict | None = None,
    ):
        self.params = params
        self.cache = cache
        self.metrics = metrics if metrics is not None else {}
        for name in (
            "calls",
            "cached",
            "prompt_tokens",
            "completion_tokens",
            "tokens",
            "cost",
            "failures",
            "retries",
            "reasks",
            "invalid_reasked",
            "cached_tokens",
            "cached_cost",
        ):
            self.metrics.setdefault(name, 0)
        self.metrics.setdefault("model", params.model)  # the report's table of calls names it
        self.context = context or {}  # models_dir/base_dir for the local provider
        self.preparation: InlinePreparation | None = None  # the last run's executor, if its own

    @property
    def provider(self) -> Provider:
        """Where the model runs (a plain litellm provider unless its prefix names one of ours)."""
        return provider_for(self.params.model)

    # -- public -------------------------------------------------------------------------
    def run_many(self, requests: list[LLMRequest], progress: Progress | None = None) -> list[LLMResult]:
        """Results in request order; never raises for one bad request (it comes back not ok)."""
        if not requests:
            return []
        # The slow synchronous parts (importing litellm, loading a local model) happen before
        # the event loop starts: Ctrl-C there stops at once, whereas inside the loop it only
        # cancels the calls once the loop gets control back, seconds later.
        if warm_up := getattr(self.provider, "warm_up", None):
            warm_up(self.params.model, self.context)
        load_litellm()
        self.provider.setup(self.context)
        p = self.params
        if prepares_inline(p.model, p.api_base):
            without_sdk = sends_without_sdk(p.model, p.api_base, self.provider.call_kwargs(p))
            self.preparation = InlinePreparation(without_sdk)
        else:
            self.preparation = None
        coro = self._run_all(requests, progress)
        try:
            asyncio.get_running_loop()
            inside_loop = True
        except RuntimeError:
            inside_loop = False
        if not inside_loop:  # run outside the except: its RuntimeError would replace the cause
            try:  # of every error re-raised inside, hiding what is_transient reads
                return run_to_end(coro)
            finally:
                # Ctrl-C while asyncio.run was still making its loop leaves the coroutine
                # unstarted, and Python would warn it was "never awaited" under the one-line
                # message; a coroutine that ran is finished by now, and closing it does nothing.
                coro.close()
        # Called from inside a running loop: run ours on a private thread (whose exceptions,
        # e.g. LLMUnavailable, reach the caller through the future).
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coro).result()

    def cache_key(self, messages: list[dict]) -> str:
        p = self.params
        # api_base and the api key are deliberately left out: where a model is served
        # does not change what it was asked, and secrets never enter a key.
        params: dict[str, Any] = {"temperature": p.temperature, "max_tokens": p.max_tokens}
        settings = self.provider.cache_settings()
        if settings:  # absent, not empty, for plain litellm: keys made before providers stay valid
            params["local"] = settings
        return digest({"model": p.model, "messages": messages, "params": params})

    # -- fan-out ------------------------------------------------------------------------
    async def _run_all(self, requests: list[LLMRequest], progress: Progress | None) -> list[LLMResult]:
        if self.preparation is not None:  # litellm prepares each request on this loop's executor
            asyncio.get_running_loop().set_default_executor(self.preparation)
        self._semaphore = asyncio.Semaphore(self.params.max_concurrency)
        self._in_flight_limit = self.params.max_concurrency
        self._calm = 0  # calls answered since the last timeout
        self._limiter = RateLimiter(self.params.requests_per_minute / 60.0)
        self._settings = self._request_settings()
        self._pacing = self._pacer()
        keys = [self.cache_key(r.messages) for r in requests]
        # one query for every first round; a miss here is a miss (this run writes what it asks)
        self._known = self.cache.get_many(keys) if self.cache is not None else {}
        self._looked_up = set(keys)
        self._writer = CacheWriter(self.cache, asyncio.get_running_loop()) if self.cache is not None else None
        self._gave_up = 0
        self._progress = progress
        self._results: list[LLMResult | None] = [None] * len(requests)
        self._pending = deque(zip(range(len(requests)), requests, keys, strict=True))
        self._unfinished = len(requests)  # not yet counted as done (answered and committed)
        self._awaiting_commit = 0
        self._in_flight = 0  # calls sent and not yet answered
        self._workers = 0
        self._backing_off = 0  # workers asleep before a retry (their slot is lent to a new worker)
        self._tasks: list[asyncio.Task] = []
        self._over: asyncio.Future = asyncio.get_running_loop().create_future()  # every request done
        self._top_up_workers()
        try:
            with fewer_collections():
                await self._drain()
        except BaseException:
            # A refused call (or Ctrl-C) ends the fan-out: stop the other calls and collect how
            # each ended, so none is left to be logged later as "Task exception was never
            # retrieved", with a traceback, past the error edge's one clear line.
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise
        finally:
            if self._writer is not None:
                self._writer.close()  # what is queued is committed, even when the run is stopped
        results = [r for r in self._results if r is not None]
        assert len(results) == len(requests)  # every worker ran until the queue was empty
        if self._gave_up == len(results):
            raise LLMUnavailable(
                f"{self.params.model}: all {len(results)} call(s) failed; "
                f"last: {results[-1].reason}. Check the server/api_base and run again."
            )
        return results

    # Why workers rather than one task per request waiting on the semaphore (issue 16): a slot
    # freed by a reply was taken by a waiting task only on the loop's next pass, after every
    # other reply that had arrived meanwhile was read; so the replies of a burst were all read
    # first and their successors all sent together at the end, and the next round came back
    # as the same burst. A worker sends its next request in the same step that read the reply,
    # so the requests leave spread out, as the replies arrived, and the bursts dissolve.
    def _top_up_workers(self) -> None:
        """Keep max_concurrency workers awake while requests wait (a worker asleep before a
        retry lends its slot to a new one; the semaphore still bounds the calls in flight)."""
        while self._pending and self._workers - self._backing_off < self.params.max_concurrency:
            self._workers += 1
            self._start(self._work())

    async def _work(self) -> None:
        try:
            # a surplus worker (one whose slot was lent out while it slept) retires when it is free
            while self._pending and self._workers - self._backing_off <= self.params.max_concurrency:
                index, request, key = self._pending.popleft()
                result, committed = await self._ask(request, key)
                if committed is None:
                    self._finish(index, result)
                else:  # the worker goes on at once; the result counts once the reply is committed
                    self._start(self._finish_when_committed(index, result, committed))
        finally:
            self._workers -= 1

    async def _drain(self) -> None:
        """Until every request is done; the first failure of a worker or of a commit is raised."""
        if self._unfinished:
            await self._over
        await asyncio.gather(*self._tasks)  # every worker has left its loop by now

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        task.add_done_callback(self._ended)
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task) -> None:
        """A worker's or a commit wait's end: the first failure stops the fan-out at once."""
        if not task.cancelled() and task.exception() is not None and not self._over.done():
            self._over.set_exception(task.exception())  # type: ignore[arg-type]

    async def _finish_when_committed(self, index: int, result: LLMResult, committed: asyncio.Future) -> None:
        await self._until_committed(committed)
        self._finish(index, result)

    def _finish(self, index: int, result: LLMResult) -> None:
        """The request is done (its reply committed): its result counts from now on."""
        self._results[index] = result
        self._unfinished -= 1
        if not self._unfinished and not self._over.done():
            self._over.set_result(None)
        if not result.ok:
            self.metrics["failures"] += 1
        if self._progress is not None:
            self._progress.advance()
        self._flush_if_all_wait()

    async def _until_committed(self, committed: asyncio.Future) -> None:
        self._awaiting_commit += 1
        self._flush_if_all_wait()
        try:
            # shielded: a cancelled call (Ctrl-C) still has its paid reply committed by close()
            await asyncio.shield(committed)
        finally:
            self._awaiting_commit -= 1

    def _flush_if_all_wait(self) -> None:
        """When no call is in flight, or every request not yet done waits for a commit, no
        reply can join the batch soon: commit it now rather than after the writer's wait (the
        run's last replies; calls spaced by requests_per_minute or by retries)."""
        if self._writer is None or not self._awaiting_commit:
            return
        if not self._in_flight or self._awaiting_commit >= self._unfinished:
            self._writer.flush_now()

    async def _ask(self, request: LLMRequest, first_key: str) -> tuple[LLMResult, asyncio.Future | None]:
        """The request's rounds: its result, and the commit of its last reply still under way."""
        from engine.llm.json_reply import followup_message

        read = request.reader()
        messages = list(request.messages)
        usage: dict[str, float] = {}
        reply: Reply | None = None
        rounds = self.params.reask + 1
        for round_ in range(rounds):
            if reply is not None and reply.committed is not None:
                # the reply being followed up is committed before the next one is paid for
                await self._until_committed(reply.committed)
            try:
                # an invalid cached reply may open a re-ask conversation, never end one
                key = first_key if round_ == 0 else self.cache_key(messages)
                reply = await self._complete(key, messages, read, reuse_invalid=round_ < rounds - 1)
            except CallFailed as e:
                text, cached = (reply.text, reply.cached) if reply else ("", False)
                return LLMResult(request.id, False, None, text, str(e), cached, usage), None
            for k, v in reply.usage.items():
                usage[k] = usage.get(k, 0) + v
            if reply.error is None:
                return LLMResult(request.id, True, reply.value, reply.text, None, reply.cached, usage), reply.committed
            if round_ < rounds - 1:
                self.metrics["reasks"] += 1
                followup = followup_message(reply.error, prose=request.schema is None)
                messages = messages + [{"role": "assistant", "content": reply.text}, followup]
        assert reply is not None  # rounds >= 1
        kind = "JSON" if request.schema is not None else "reply"
        reason = f"invalid {kind} after {rounds} attempt(s): {reply.error}"
        return LLMResult(request.id, False, None, reply.text, reason, reply.cached, usage), reply.committed

    def _cached(self, key: str) -> Any | None:
        """The cache entry of `key`: from the run's first lookup, else (a re-ask round) the store."""
        if key in self._looked_up:
            return self._known.get(key)
        return self.cache.get(key) if self.cache is not None else None

    async def _complete(self, key: str, messages: list[dict], read: Reader, reuse_invalid: bool) -> Reply:
        """One logical call: from the cache, else over the network with retries; read either way."""
        if self.cache is not None:
            hit = self._cached(key)
            if hit is not None:
                # Read again rather than trusting the stored verdict: the value is needed anyway,
                # and an entry from before verdicts were stored is judged like a new reply.
                value, error = _read(read, hit["text"])
                if error is None or reuse_invalid:
                    self._count_cached(hit.get("usage") or {})
                    return Reply(hit["text"], value, error, True, {})
                self.metrics["invalid_reasked"] += 1  # its last word was invalid: ask again
        text, usage = await self._call_with_retries(messages)
        value, error = _read(read, text)
        # queued for commit at once; the request counts as done only once it is committed
        committed = None
        if self._writer is not None:
            entry = {"text": text, "usage": usage, "model": self.params.model, "valid": error is None, "error": error}
            committed = self._writer.submit(key, entry)
        self._count(usage)
        return Reply(text, value, error, False, usage, committed)

    async def _call_with_retries(self, messages: list[dict]) -> tuple[str, dict]:
        last: BaseException | None = None
        for attempt in range(self.params.retries + 1):
            if attempt:
                self.metrics["retries"] += 1
                await self._back_off(attempt)
            try:
                async with self._semaphore:
                    await self._limiter.acquire_async()
                    if self._pacing is not None:
                        await self._pacing.wait_turn()
                    self._in_flight += 1
                    try:
                        answered = await self._call(messages)
                    finally:
                        self._in_flight -= 1
                        self._flush_if_all_wait()
                self._recover()
                return answered
            except Exception as e:  # noqa: BLE001 - classified just below
                if _refused(e):
                    raise LLMUnavailable(
                        f"{self.params.model}: the call was refused or cannot be sent ({type(e).__name__}: "
                        f"{_short(e)}). Check llm.model, llm.api_base and "
                        f"{key_hint(self.params.model, self.params.api_base)}"
                    ) from e
                if not _worth_retrying(e):
                    raise CallFailed(f"{type(e).__name__}: {_short(e)}") from e
                last = e
                if _timed_out(e):
                    await self._ease_off()
        self._gave_up += 1
        hint = ""
        if last is not None and _timed_out(last):
            hint = (
                f" (each attempt may take llm.timeout = {self.params.timeout:g} s, time spent queued at the "
                "server included: raise llm.timeout or lower llm.max_concurrency for a slow server; "
                "`recipe run --retry-failed` asks again)"
            )
        raise CallFailed(
            f"gave up after {self.params.retries + 1} attempt(s): {_described(last)}: {_short(last)}{hint}"
        )

    async def _back_off(self, attempt: int) -> None:
        """Sleep before a retry; meanwhile a new worker takes this one's slot."""
        self._backing_off += 1
        self._top_up_workers()
        try:
            await asyncio.sleep(backoff_delay(attempt - 1, BACKOFF_BASE, BACKOFF_CAP))
        finally:
            self._backing_off -= 1

    async def _ease_off(self) -> None:
        """A timeout means the server is saturated (a single-slot local server queues what we
        send, and queued time counts toward the timeout): keep one request fewer in flight.

        The slot is retired by holding a semaphore permit; at least one stays. `_recover` gives
        slots back as calls succeed, so a passing hiccup does not slow the rest of the run.
        """
        self._calm = 0
        if self._in_flight_limit <= 1:
            return
        first = self._in_flight_limit == self.params.max_concurrency
        self._in_flight_limit -= 1
        self.metrics["concurrency_lowered_to"] = min(
            self._in_flight_limit, self.metrics.get("concurrency_lowered_to", self._in_flight_limit)
        )
        (log.warning if first else log.debug)(
            "%s: a call timed out after %g s (time queued at the server counts); at most %d request(s) "
            "in flight until calls come back in time",
            self.params.model,
            self.params.timeout,
            self._in_flight_limit,
        )
        await self._semaphore.acquire()

    def _recover(self) -> None:
        """Additive increase: one slot back after as many timely calls as are in flight."""
        self._calm += 1
        if self._in_flight_limit < self.params.max_concurrency and self._calm >= self._in_flight_limit:
            self._in_flight_limit += 1
            self._calm = 0
            self._semaphore.release()

    def _request_settings(self) -> tuple[dict[str, Any], float | None]:
        """What every call of this run hands litellm besides its messages, and its deadline:
        worked out once per run (the provider lookup and the placeholder-key check read the
        model id, the api_base and the environment; per call that was CPU on the event loop)."""
        p, provider = self.params, self.provider
        kwargs: dict[str, Any] = dict(
            model=provider.litellm_model(p.model),
            temperature=p.temperature,
            max_tokens=p.max_tokens,
            num_retries=0,
            **provider.call_kwargs(p),
        )
        if p.api_base:
            kwargs["api_base"] = p.api_base
        if self.preparation is not None and self.preparation.without_sdk:
            kwargs = settings_without_sdk(kwargs)
        return kwargs, provider.deadline(p)

    def _pacer(self) -> Pacer | None:
        """What spaces this run's requests out (pacing.Pacer); None for our in-process providers,
        which batch the requests that arrive together."""
        if not isinstance(self.provider, LitellmProvider):
            return None
        return Pacer(min(MAX_GAP, PACING_FACTOR * LOOP_TIME.typical()), self.params.max_concurrency)

    async def _call(self, messages: list[dict]) -> tuple[str, dict]:
        litellm = load_litellm()
        kwargs, deadline = self._settings
        call = LoopTimed(litellm.acompletion(messages=messages, **kwargs))
        response = await _within(call, deadline)
        LOOP_TIME.record(call.spent)
        text = response.choices[0].message.content
        if text is None:
            raise CallFailed("the model returned no content")
        return text, _usage(response)

    def _count_cached(self, usage: dict) -> None:
        """A reply from the cache: no call made, but what it cost when it was made is what the
        cache saved (the report's "tokens/cost saved by the cache")."""
        self.metrics["cached"] += 1
        self.metrics["cached_tokens"] += int(usage.get("tokens", 0) or 0)
        self.metrics["cached_cost"] = round(self.metrics["cached_cost"] + float(usage.get("cost", 0) or 0), 8)

    def _count(self, usage: dict) -> None:
        self.metrics["calls"] += 1
        for name in ("prompt_tokens", "completion_tokens", "tokens", "cost"):
            self.metrics[name] += usage.get(name, 0)
        self.metrics["cost"] = round(self.metrics["cost"], 8)


async def _within(call: Awaitable[Any], seconds: float | None) -> Any:
    """`await call`, abandoned with TimeoutError after `seconds` (None: never).

    asyncio.timeout runs the call in this task; wait_for (before Python 3.12) wraps it in a new
    task whose first step waits for the loop's next pass, so a worker that had just read a
    reply would send its next request only after every other reply of the pass was read.
    """
    if seconds is None:
        return await call
    timeout = getattr(asyncio, "timeout", None)  # Python 3.11+
    if timeout is None:
        return await asyncio.wait_for(call, timeout=seconds)
    async with timeout(seconds):
        return await call


def _usage(response: Any) -> dict:
    u = getattr(response, "usage", None)
    prompt = int(getattr(u, "prompt_tokens", 0) or 0)
    completion = int(getattr(u, "completion_tokens", 0) or 0)
    # litellm already priced the call (hidden params); unknown models (local, fake) cost 0.
    # Pricing again here would double the client's CPU time per call.
    try:
        cost = float((getattr(response, "_hidden_params", None) or {}).get("response_cost") or 0.0)
    except (TypeError, ValueError):
        cost = 0.0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "tokens": prompt + completion, "cost": cost}


def _read(read: Reader, text: str) -> tuple[Any, str | None]:
    """A step's reader never takes a paid reply down with it: a bug there is an invalid reply."""
    try:
        return read(text)
    except Exception as e:  # noqa: BLE001 - reported as the reply's error, with its type
        return None, f"the reply could not be read ({type(e).__name__}: {_short(e)})"


def _worth_retrying(error: BaseException) -> bool:
    """is_transient, and the answers litellm's own HTTP handler (providers.sends_without_sdk)
    names differently from the OpenAI SDK, told apart by their HTTP status as before:

    - a reply with a success status whose body is not a completion (an HTML page, a cut-off
      body) comes with that status, 200, where the SDK's came as a 500: garbled on the way;
    - a 408, 409, 425 or 429 whose body says "invalid_request_error" (as many servers' error
      bodies do) comes as a BadRequestError, a refusal by class, where the SDK's came as a
      Timeout, APIError or RateLimitError: the status says "try again later".
    """
    if is_transient(error):
        return True
    status = http_status(error)
    return status is not None and (200 <= status < 300 or status in TRANSIENT_STATUS)


def _described(error: BaseException | None) -> str:
    """The error's class, and its HTTP status where the class alone would mislead (a 429 that
    litellm calls a BadRequestError, see _worth_retrying)."""
    if error is None:
        return type(error).__name__
    status = http_status(error)
    if status is not None and not is_transient(error) and _worth_retrying(error):
        return f"{type(error).__name__} (HTTP {status})"
    return type(error).__name__


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or "Timeout" in type(error).__name__


def _short(error: BaseException | None, limit: int = 300) -> str:
    # scrubbed before it is cut: a key cut in half would no longer be recognised
    text = " ".join(redact(str(error)).split()) or "no message (timed out?)"
    return text if len(text) <= limit else text[:limit] + "..."


class StepResources(Protocol):
    """The parts of a running step's context the client uses (engine.steps.base.StepContext)."""

    metrics: dict[str, Any]
    models_dir: Path
    base_dir: Path

    def item_cache(self, name: str) -> ItemCache: ...


def client_for(ctx: StepResources, params: LLMParams) -> LLMClient:
    """The client of one pass's resolved settings, counting into ctx.metrics['llm']."""
    metrics = ctx.metrics.setdefault("llm", {})
    context = {"models_dir": ctx.models_dir, "base_dir": ctx.base_dir}
    return LLMClient(params, ctx.item_cache("llm"), metrics, context)
