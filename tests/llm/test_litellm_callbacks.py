"""litellm's success logging is skipped while no callback listens (issue 16: ~0.7 ms of CPU per
call); a callback registered with litellm still gets every success event."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from engine.llm.client import LLMClient, LLMRequest
from engine.llm.providers import load_litellm
from fakes.openai_server import FakeOpenAI, last_user_message
from helpers.llm_params import fake_params


def test_a_registered_litellm_callback_still_hears_every_success(monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = load_litellm()
    from litellm.integrations.custom_logger import CustomLogger

    heard: list[str] = []
    all_heard = threading.Event()

    class Listener(CustomLogger):
        async def async_log_success_event(
            self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            heard.append(response_obj.choices[0].message.content)
            if len(heard) == 3:
                all_heard.set()

    monkeypatch.setattr(litellm, "callbacks", [Listener()])
    with FakeOpenAI(lambda body: f"Answer to {last_user_message(body)}.", latency=0.01) as srv:
        requests = [LLMRequest(str(i), [{"role": "user", "content": f"item {i}"}]) for i in range(3)]
        results = LLMClient(fake_params(srv, reask=0)).run_many(requests)
    assert all_heard.is_set(), heard
    assert all(r.ok for r in results)
    assert sorted(heard) == [f"Answer to item {i}." for i in range(3)]
