"""LLM settings aimed at a fake OpenAI-compatible server (tests/fakes/openai_server.py)."""

from __future__ import annotations

from typing import Any

from engine.recipe.shared import LLMParams
from fakes.openai_server import FakeOpenAI


def fake_params(srv: FakeOpenAI, **overrides: Any) -> LLMParams:
    """LLM settings pointed at `srv`, without rate limit; a test overrides what it is about."""
    base: dict[str, Any] = dict(
        model="openai/fake",
        api_base=srv.base_url,
        temperature=0.0,
        max_tokens=200,
        max_concurrency=8,
        requests_per_minute=0,
        timeout=5.0,
        retries=6,
        reask=2,
    )
    return LLMParams(**{**base, **overrides})
