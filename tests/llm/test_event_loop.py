"""The LLM passes' event loop is made whole even when Ctrl-C lands while it is being made."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from engine.llm import client


def test_a_ctrl_c_during_the_loops_constructor_is_raised_after_it_with_the_loop_closed(monkeypatch):  # noqa: ANN001
    """The SIGINT arrives from the OS inside asyncio's constructor (sent by the constructor
    itself here); the engine must raise KeyboardInterrupt only once the loop is whole, and close
    it, leaving nothing half-built or open for __del__ to complain about at exit."""
    made: list[asyncio.AbstractEventLoop] = []
    build = asyncio.new_event_loop

    def interrupted_while_building() -> asyncio.AbstractEventLoop:
        os.kill(os.getpid(), signal.SIGINT)
        made.append(build())
        return made[-1]

    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(asyncio, "new_event_loop", interrupted_while_building)
    with pytest.raises(KeyboardInterrupt):
        client.loop_made_without_interrupts()
    assert len(made) == 1 and made[0].is_closed()
    assert signal.getsignal(signal.SIGINT) is handler


def test_without_a_ctrl_c_the_loop_is_open_and_the_handler_back():
    handler = signal.getsignal(signal.SIGINT)
    loop = client.loop_made_without_interrupts()
    try:
        assert not loop.is_closed()
        assert signal.getsignal(signal.SIGINT) is handler
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()
