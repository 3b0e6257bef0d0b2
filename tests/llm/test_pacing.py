"""Pacing of a fan-out (issue 16): requests leave spaced by more than the event loop spends on
a call, so a round's replies come back spread out instead of as one burst the loop reads one
after the other; the loop time of a call is measured, not guessed.

Real HTTP to the fake server, a real event loop; the pacer's own arithmetic with a given clock.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import engine.llm.client as llm
from engine.llm.client import LLMClient, LLMRequest, _within
from engine.llm.pacing import LoopTime, LoopTimed, Pacer
from fakes.openai_server import FakeOpenAI, last_user_message
from helpers.llm_params import fake_params


def _answer(body: dict) -> str:
    return f"The answer to {last_user_message(body)}."


def _requests(n: int) -> list[LLMRequest]:
    return [LLMRequest(str(i), [{"role": "user", "content": f"item {i}"}]) for i in range(n)]


def _loop_time(seconds: float) -> LoopTime:
    measured = LoopTime()
    for _ in range(5):  # the first is taken for a process's first call, and left out
        measured.record(seconds)
    return measured


def test_the_first_round_leaves_spaced_out_not_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten slots, a call measured at 20 ms of loop time: the first ten requests reach the server
    spread over ~9 x 30 ms (was: all within a few ms of each other, so all ten came back
    together and stayed together for the whole run); every slot is still used and every
    request ends once."""
    arrived: list[float] = []
    lock = threading.Lock()

    def answer(body: dict) -> str:
        with lock:
            arrived.append(time.monotonic())
        return _answer(body)

    with FakeOpenAI(answer, latency=0.5) as srv:
        client = LLMClient(fake_params(srv, max_concurrency=10, reask=0))
        # litellm's first call in a process sets itself up (seconds): not part of the round
        client.run_many([LLMRequest("warm-up", [{"role": "user", "content": "warm-up"}])])
        arrived.clear()
        monkeypatch.setattr(llm, "LOOP_TIME", _loop_time(0.020))
        monkeypatch.setattr(llm, "MAX_GAP", 1.0)
        results = client.run_many(_requests(30))
        peak = srv.max_in_flight
    assert [r.text for r in results] == [f"The answer to item {i}." for i in range(30)]
    first = sorted(arrived)[:10]
    # let go 30 ms apart; a request's own preparation, its new connection and the server's
    # thread start-up shift single arrivals by some ms either way, not the spread
    assert first[-1] - first[0] >= 9 * 0.030 * 0.9, [round(b - a, 4) for a, b in zip(first, first[1:], strict=False)]
    assert peak == 10


def test_a_bunch_of_replies_sends_its_successors_spaced_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five replies that leave the server at the same moment: the loop reads them in one go, yet
    their slots' next requests do not all leave back to back (was: all five within a few ms,
    so the bunch came back as a bunch the next round too). Past the first round a tenth of a
    round may queue, at least two: here two wait their turns a gap apart, the others go."""
    monkeypatch.setattr(llm, "LOOP_TIME", _loop_time(0.030))
    monkeypatch.setattr(llm, "MAX_GAP", 1.0)
    first_wave = threading.Barrier(5, timeout=20)
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    def together(body: dict) -> str:
        item = last_user_message(body)
        with lock:
            arrived[item] = time.monotonic()
        if int(item.split()[1]) < 5:
            first_wave.wait()  # every one of the first five answers at once
        return _answer(body)

    with FakeOpenAI(together) as srv:
        results = LLMClient(fake_params(srv, max_concurrency=5, reask=0)).run_many(_requests(10))
    assert all(r.ok for r in results)
    second = sorted(arrived[f"item {i}"] for i in range(5, 10))
    assert second[-1] - second[0] >= 0.045 * 0.9, [round(b - a, 4) for a, b in zip(second, second[1:], strict=False)]


def _released(pacer: Pacer, waiting: int, hold_loop_after: float | None = None) -> list[float]:
    """When each of `waiting` requests, asking at the same moment, was let go."""
    went: list[float] = []

    async def one() -> None:
        await pacer.wait_turn()
        went.append(time.monotonic())

    async def run() -> None:
        if hold_loop_after is not None:  # a garbage collection, another process on the CPU
            asyncio.get_running_loop().call_later(hold_loop_after, time.sleep, 0.15)
        await asyncio.gather(*(one() for _ in range(waiting)))

    asyncio.run(run())
    return went


def test_the_pacer_lets_requests_go_a_gap_apart_and_queues_at_most_a_round() -> None:
    went = _released(Pacer(0.02, slots=5), 5)
    gaps = [b - a for a, b in zip(went, went[1:], strict=False)]
    assert len(went) == 5 and min(gaps) >= 0.018, gaps
    # seven at once, five slots: the first goes, the four others of the first round queue, and
    # the two past it find more than a tenth of a round queued: the loop cannot keep up, they go
    went = _released(Pacer(0.02, slots=5), 7)
    assert went[2] - went[0] < 0.01, went
    assert min(b - a for a, b in zip(went[2:], went[3:], strict=False)) >= 0.018, went
    assert Pacer(0.0, slots=5).gap == 0 and len(_released(Pacer(0.0, slots=5), 3)) == 3  # pacing off


def test_after_the_first_round_a_tenth_of_a_round_may_queue_the_rest_goes_at_once() -> None:
    """Past the first round, more than a tenth of a round waiting means the loop cannot keep up
    (a fast server, many slots): those requests go at once instead of leaving the loop idle
    (was, with every request queued: a run at 100 slots and 0.1 s a call 1.5x slower)."""
    pacer = Pacer(0.02, slots=10)
    assert pacer.later_queue == 2
    first = _released(pacer, 10)  # the whole first round queues: 9 x 20 ms
    assert first[-1] - first[0] >= 0.17, first
    later = _released(pacer, 5)  # one free turn, two queued, two over the queue's limit
    assert sum(1 for t in later if t - later[0] < 0.01) == 3, [round(t - later[0], 4) for t in later]
    # the two queued ones leave a turn apart (where the first of them starts depends on when the
    # previous round's last turn was: measuring from later[0] failed CI by 0.6 ms)
    assert later[-1] - later[-2] >= 0.018, [round(t - later[0], 4) for t in later]


def test_after_the_loop_was_held_up_the_queued_requests_still_leave_spaced() -> None:
    """Held 150 ms mid-round, the requests whose turns passed meanwhile are not let go together."""
    went = _released(Pacer(0.02, slots=10), 10, hold_loop_after=0.03)
    gaps = [b - a for a, b in zip(went, went[1:], strict=False)]
    assert min(gaps) >= 0.018, gaps
    assert max(gaps) >= 0.1, gaps  # the hold-up itself


def test_loop_time_leaves_out_a_process_first_call_and_shrugs_off_one_slow_call() -> None:
    measured = LoopTime()
    assert measured.typical() == LoopTime.DEFAULT  # nothing measured yet
    measured.record(3.0)  # litellm setting itself up
    assert measured.typical() == LoopTime.DEFAULT
    for seconds in [0.004] * 9 + [0.5]:  # one call held by a garbage collection
        measured.record(seconds)
    assert measured.typical() == 0.004


async def _busy_then_sleep(busy: float, sleep: float, finished: list[str]) -> str:
    try:
        end = time.perf_counter() + busy
        while time.perf_counter() < end:  # holds the loop, as litellm's preparation does
            pass
        await asyncio.sleep(sleep)  # waits for the network: not the loop's time
        end = time.perf_counter() + busy
        while time.perf_counter() < end:
            pass
        return "reply"
    finally:
        finished.append("cleaned up")


def test_loop_timed_counts_only_the_steps_that_hold_the_loop() -> None:
    finished: list[str] = []

    async def run() -> tuple[str, float]:
        call = LoopTimed(_busy_then_sleep(0.03, 0.3, finished))
        return await call, call.spent

    reply, spent = asyncio.run(run())
    assert reply == "reply" and finished == ["cleaned up"]
    assert 0.06 <= spent < 0.2, spent  # 2 x 30 ms held, the 300 ms sleep not counted


def test_loop_timed_passes_errors_timeouts_and_cancellation_through() -> None:
    finished: list[str] = []

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("a 500 from the provider")

    async def call() -> str:
        return await LoopTimed(_busy_then_sleep(0.0, 5.0, finished))

    async def run() -> None:
        with pytest.raises(ValueError, match="a 500 from the provider"):
            await LoopTimed(fails())
        with pytest.raises(TimeoutError):  # the client's deadline abandons the call
            await _within(LoopTimed(_busy_then_sleep(0.0, 5.0, finished)), 0.05)
        assert finished == ["cleaned up"]
        task = asyncio.ensure_future(call())  # Ctrl-C cancels the workers' tasks
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == ["cleaned up", "cleaned up"]

    asyncio.run(run())


def test_the_client_measures_a_calls_loop_time_without_its_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a run, the calls' loop times are recorded, each far below the server's 0.4 s."""
    measured = LoopTime()
    monkeypatch.setattr(llm, "LOOP_TIME", measured)
    with FakeOpenAI(_answer, latency=0.4) as srv:
        results = LLMClient(fake_params(srv, max_concurrency=4, reask=0)).run_many(_requests(8))
    assert all(r.ok for r in results)
    samples = list(measured._recent)
    assert len(samples) == 7  # the first call of a fresh estimate is left out
    assert all(0 < s < 0.3 for s in samples), samples


def test_the_fake_server_answers_a_kept_alive_connection_without_a_delayed_ack_stall() -> None:
    """The fake sends a reply's headers and body in two writes; with Nagle's algorithm on, the
    body waited for the client's delayed ACK of the headers: ~40 ms on every reply of a
    kept-alive connection (a third of the fan-out benchmark's replies), charged to the client
    under test. Real servers (uvicorn, nginx) turn Nagle off, and so does the fake now."""
    import http.client
    import json
    import statistics

    with FakeOpenAI(_answer) as srv:
        host_port = srv.base_url.split("//")[1].split("/")[0]
        connection = http.client.HTTPConnection(host_port)
        took = []
        for i in range(30):
            started = time.perf_counter()
            body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": f"item {i}"}]})
            connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
            reply = json.loads(connection.getresponse().read())
            took.append(time.perf_counter() - started)
            assert reply["choices"][0]["message"]["content"] == f"The answer to item {i}."
        connection.close()
    assert statistics.median(took) < 0.02, [round(t, 4) for t in took]
