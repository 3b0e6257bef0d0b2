"""The fake YouTube and its clock, shared by every YouTube test (defined in test_youtube.py)."""

from __future__ import annotations

import pytest
from test_youtube import FakeClock, FakeYouTube

from engine.sources.access import youtube_access
from engine.sources.fetch import TranscriptFetcher
from engine.sources.youtube import Lister
from engine.steps import sources as sources_step
from engine.steps import transcripts as transcripts_step


@pytest.fixture()
def yt(monkeypatch: pytest.MonkeyPatch) -> FakeYouTube:
    return FakeYouTube(monkeypatch)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Injected into the steps' fetcher and lister: no test waits for a real backoff."""
    fake = FakeClock()
    monkeypatch.setattr(
        transcripts_step,
        "make_fetcher",
        lambda cfg, base_dir: TranscriptFetcher.from_config(cfg, base_dir, sleep=fake.sleep, clock=fake),
    )
    monkeypatch.setattr(
        sources_step,
        "make_lister",
        lambda cfg, base_dir: Lister(cfg.retries, cfg.backoff, sleep=fake.sleep, access=youtube_access(cfg, base_dir)),
    )
    return fake
