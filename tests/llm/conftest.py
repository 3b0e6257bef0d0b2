"""Every client test: fast backoff and a dummy key (the fake server ignores it)."""

from __future__ import annotations

import pytest

import engine.llm.client as llm


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
