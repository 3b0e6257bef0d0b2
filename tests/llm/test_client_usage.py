"""What LLM calls cost, as the report's table of calls reads it from a step's metrics: tokens and
cost of the calls made, and what the replies taken from the cache cost when they were made."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.llm.client import LLMClient, LLMRequest
from engine.pipeline.store import Store
from engine.recipe.shared import LLMParams
from fakes.openai_server import FakeOpenAI


def test_calls_record_tokens_cost_and_what_the_cache_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    asks = [f"Tell me about fasting, part {i}." for i in range(3)]
    requests = [LLMRequest(f"r{i}", [{"role": "user", "content": ask}]) for i, ask in enumerate(asks)]
    with FakeOpenAI(lambda body: "Fasting lowers insulin, and the body burns stored fat.") as srv:
        # a priced model (litellm's local cost map), served by the fake server
        params = LLMParams(model="openai/gpt-4o-mini", api_base=srv.base_url, retries=0)
        with Store(tmp_path / "store.duckdb") as store:
            first: dict = {}
            LLMClient(params, store.item_cache("llm"), first).run_many(requests)
            again: dict = {}
            LLMClient(params, store.item_cache("llm"), again).run_many(requests)
    # the fake counts whitespace words: 6 prompt and 9 completion tokens per call
    assert (first["calls"], first["prompt_tokens"], first["completion_tokens"], first["tokens"]) == (3, 18, 27, 45)
    assert first["cost"] > 0 and first["model"] == "openai/gpt-4o-mini"
    assert (again["calls"], again["cached"], again["tokens"], again["cost"]) == (0, 3, 0, 0)
    assert again["cached_tokens"] == 45 and again["cached_cost"] == pytest.approx(first["cost"])
