"""transcripts: read or fetch each video's transcript, clean it, keep segment timestamps, chunk it.

Local files are parsed; YouTube videos are fetched (youtube-transcript-api, then yt-dlp
subtitles) through a per-video cache keyed by video id + language preference, so a channel
with new uploads fetches only the new ones. The cache holds raw segments, so changing the
clean-up or chunking options never refetches. One video failing is a row with its reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import FetchFailed, MalformedTranscript, Problem
from engine.llm.context import TOKENS_PER_QUESTION, Reader, Room, transcript_room
from engine.pipeline.hashing import Unkeyed
from engine.recipe.load import Located
from engine.recipe.paths import locate
from engine.sources.access import access_problems
from engine.sources.chunking import chunk_segments, estimate_tokens
from engine.sources.fetch import TranscriptFetcher
from engine.sources.formats import clean_segments, parse_file
from engine.sources.settings import TranscriptSettings
from engine.sources.transcript_cache import CACHE, STATUS_CACHE, cache_key, permanent_failure
from engine.sources.youtube import PERSISTENT, SKIPPED, format_counts
from engine.steps.base import Inputs, Recipe, StepContext

log = logging.getLogger("engine.steps.transcripts")

NAME = "transcripts"
VERSION = 4  # 4: transcripts longer than the reading model's context are cut into windows
DEPENDS = ("sources",)
COLUMNS = {
    "video_id": "VARCHAR",
    "chunk": "INTEGER",
    "title": "VARCHAR",
    "kind": "VARCHAR",
    "language": "VARCHAR",
    "via": "VARCHAR",
    "text": "VARCHAR",
    "segments": "STRUCT(start DOUBLE, duration DOUBLE, text VARCHAR)[]",
    "start_time": "DOUBLE",
    "end_time": "DOUBLE",
    "words": "INTEGER",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "video_id": "The video (sources.video_id).",
    "chunk": "The chunk's number within the video's transcript, from 0.",
    "title": "The video's title.",
    "kind": "The transcript's kind: manual | generated (YouTube) | local; NULL when none was found.",
    "language": "The transcript's language code, when the fetcher reports one (NULL for local files).",
    "via": "How it was read: file | youtube-transcript-api | yt-dlp; NULL when none was found.",
    "text": "The chunk's cleaned text.",
    "segments": "The chunk's timed segments (start and duration in seconds, text).",
    "start_time": "Seconds into the video where the chunk starts.",
    "end_time": "Seconds into the video where the chunk ends.",
    "words": "Words in the chunk's text.",
}
SECTION = "transcripts"
Settings = TranscriptSettings
# Below this many tokens of room a transcript cannot be read in any useful piece.
MIN_ROOM = 100


@dataclass(frozen=True)
class Config:
    transcripts: TranscriptSettings
    # The LLM passes that read whole transcripts. They key this step only through the room they
    # leave for a transcript (a number, in the fingerprint): another model with the same context,
    # or another prompt wording, changes nothing here.
    readers: tuple[Reader, ...] = field(compare=False)


def config(recipe: Recipe) -> Config:
    return Config(recipe.transcripts, _readers(recipe))


def _readers(recipe: Recipe) -> tuple[Reader, ...]:
    prompts = recipe.prompts
    asked = getattr(getattr(recipe, "questions", None), "max_per_video", 15) * TOKENS_PER_QUESTION
    readers = []
    for name, template, extra in (("questions", prompts.questions, 0), ("answers", prompts.answers, asked)):
        params = recipe.llm.for_pass(name)
        prompt_tokens = estimate_tokens(f"{prompts.system} {template}") + extra
        readers.append(Reader(name, params.model, params.max_tokens, prompt_tokens))
    return tuple(readers)


def check(recipe: Recipe, located: Located) -> list[Problem]:
    """A cookies file that is not there, a proxy variable unset (where YouTube is asked): before anything runs."""
    asks_youtube = any(getattr(s, "type", None) == "youtube" for s in recipe.sources)
    return access_problems(recipe.transcripts, recipe.base_dir, located, proxy=asks_youtube)


def fingerprint(ctx: StepContext, cfg: Config) -> dict:
    """The tokens of transcript one prompt can hold: it decides which videos are cut into windows,
    so it keys this step (the model behind it and its context ride along unkeyed, for the log)."""
    override = cfg.transcripts.chunking.context_tokens
    room = transcript_room(cfg.readers, ctx.base_dir, ctx.item_cache("model_context"), override)
    return {"room": room.tokens, "why": Unkeyed(room)}


def make_fetcher(cfg: TranscriptSettings, base_dir: Path) -> TranscriptFetcher:
    """The network fetcher (its proxy and cookies resolved now); tests replace this to inject a fake clock and sleep."""
    return TranscriptFetcher.from_config(cfg, base_dir)


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    # Dataset rows are question/answer pairs, not videos: they reach curate through the answers step.
    videos = [v for v in inputs["sources"].ok_rows() if v["source"] != "dataset"]
    settings, room = cfg.transcripts, ctx.fingerprint["why"].value
    tally: Counter = Counter()
    reasons: dict[str, Counter] = {"failed": Counter(), "skipped": Counter()}
    fetcher: list[TranscriptFetcher] = []  # created on the first YouTube video only
    rows: list[dict] = []
    _warn_small_windows(ctx, settings, room)
    with ctx.progress(len(videos), "transcripts") as bar:
        for video in videos:
            got = _local(video, ctx.base_dir) if video["source"] == "local" else _youtube(ctx, video, settings, fetcher)
            tally[got["how"]] += 1
            if got["status"] == "ok":
                got = _cut(ctx, video, got, settings, room)
            if got["status"] != "ok":
                reasons[got["status"]][got["category"]] += 1
                ctx.log.warning("%s %s: %s", got["status"], video["video_id"], got["reason"])
            rows.extend(_rows(video, got))
            bar.advance()
    _summarise(ctx, tally, reasons, fetcher, inputs["sources"])
    return rows


def _cut(ctx: StepContext, video: dict, got: dict, cfg: TranscriptSettings, room: Room) -> dict:
    """Clean the segments and cut them into pieces that fit the reading model's context."""
    c = cfg.clean
    segments = clean_segments(got["segments"], c.strip_cues, c.merge_overlaps, c.normalize_whitespace)
    if not segments:
        where = video["path"] if video.get("source") == "local" else ""
        return _failure("failed", "empty after clean-up", where, how=got["how"])
    if room.tokens < MIN_ROOM:
        return _failure("failed", "no room in the context", f"{room.explain()}; lower max_tokens", how=got["how"])
    chunking = cfg.chunking
    if chunking.mode == "tokens":
        window = min(chunking.window_tokens, room.tokens)
        pieces = chunk_segments(segments, "tokens", window, chunking.overlap_tokens)
    else:
        pieces = _whole_or_windows(ctx, video, segments, cfg, room)
    largest = max(estimate_tokens(p["text"]) for p in pieces)
    if largest > room.tokens:  # windows are cut between words: text with few spaces cannot be cut
        why = f"a piece of ~{largest} tokens cannot be cut smaller (too few spaces to cut at): {room.explain()}"
        return _failure("failed", "does not fit the context", f"{why}; use a model with a longer context", got["how"])
    return {**got, "pieces": pieces}


def _whole_or_windows(ctx: StepContext, video: dict, segments: list[dict], cfg: TranscriptSettings, room: Room) -> list:
    """One piece when the transcript fits one prompt; else windows of the room there is.

    Cut with a warning rather than failed: failing would leave the user to rerun with
    `mode: tokens` for every video, and sending it whole would fail at the provider after paying
    for the others (or be silently truncated by a local server).
    """
    tokens = estimate_tokens(" ".join(s["text"] for s in segments))
    if tokens <= room.tokens:
        return chunk_segments(segments, "whole")
    pieces = chunk_segments(segments, "tokens", room.tokens, cfg.chunking.overlap_tokens)
    ctx.log.warning(
        "%s (%s): ~%d tokens do not fit one prompt: %s; cut into %d windows. Set "
        "transcripts.chunking.context_tokens if the model reads more, or chunking.mode: tokens to choose "
        "the windows yourself",
        video["video_id"],
        video["title"],
        tokens,
        room.explain(),
        len(pieces),
    )
    ctx.metrics.setdefault("cut_to_fit", {})[video["video_id"]] = len(pieces)
    return pieces


def _warn_small_windows(ctx: StepContext, cfg: TranscriptSettings, room: Room) -> None:
    if cfg.chunking.mode == "tokens" and cfg.chunking.window_tokens > room.tokens >= MIN_ROOM:
        ctx.log.warning(
            "transcripts.chunking.window_tokens (%d) does not fit one prompt: %s; windows of %d tokens are used",
            cfg.chunking.window_tokens,
            room.explain(),
            room.tokens,
        )


def _local(video: dict, base_dir: Path) -> dict:
    """A local file's segments; whatever is wrong with the file is a failed row naming it."""
    recorded = video["path"]
    try:
        segments = parse_file(locate(recorded, base_dir), video["format"])
    except MalformedTranscript as e:
        return _failure("failed", "malformed file", f"{recorded}: {e.reason}", how="failed")
    except Exception as e:  # noqa: BLE001 - a parser bug on one odd file must not end the run
        log.debug("parsing %s failed", recorded, exc_info=True)
        return _failure(
            "failed", "malformed file", f"{recorded}: could not parse it ({type(e).__name__}: {e})", "failed"
        )
    return {"status": "ok", "how": "read", "segments": segments, "kind": "local", "language": None, "via": "file"}


def _youtube(ctx: Any, video: dict, cfg: Any, fetcher: list) -> dict:
    cache = ctx.item_cache(CACHE)
    key = cache_key(video["video_id"], cfg.languages, cfg.prefer_manual)
    hit = cache.get(key) or {}
    history = {"transient_failures": hit.get("transient_failures", 0), "forced_retries": hit.get("forced_retries", 0)}
    if hit.get("status") == "ok" or (permanent_failure(hit) and not ctx.options.retry_failed):
        return {**hit, "how": "cached"}
    if permanent_failure(hit):
        history["forced_retries"] += 1  # --retry-failed
    if not fetcher:
        fetcher.append(make_fetcher(cfg, ctx.base_dir))
    try:
        got = fetcher[0].fetch(video["video_id"])
    except FetchFailed as e:
        status = "skipped" if e.availability in SKIPPED else "failed"
        result = _failure(status, e.category, e.reason, how=status)
        history["transient_failures"] += 0 if e.permanent else 1
        cache.put(key, {**{k: v for k, v in result.items() if k != "how"}, "permanent": e.permanent, **history})
        if e.availability in PERSISTENT:  # the next listing skips it without asking YouTube again
            _remember_status(ctx, video, e)
        return result
    result = {
        "status": "ok",
        "segments": got.segments,
        "kind": got.kind,
        "language": got.language,
        "via": got.via,
        **history,
    }
    cache.put(key, result)  # committed at once: a killed run keeps every finished video
    return {**result, "how": "fetched"}


def _remember_status(ctx: Any, video: dict, error: FetchFailed) -> None:
    entry = {
        "id": video["video_id"],
        "title": video["title"],
        "duration": video["duration"],
        "upload_date": video["upload_date"],
        "availability": error.availability,
        "url": video["url"],
        "source_url": video["url"],
        "error": error.reason,
    }
    ctx.item_cache(STATUS_CACHE).put(video["video_id"], {"entry": entry})


def _failure(status: str, category: str, reason: str, how: str) -> dict:
    return {
        "status": status,
        "category": category,
        "reason": f"{category}: {reason}" if reason else category,
        "segments": [],
        "kind": None,
        "language": None,
        "via": None,
        "how": how,
    }


def _rows(video: dict, got: dict) -> list[dict]:
    base = {
        "video_id": video["video_id"],
        "title": video["title"],
        "kind": got["kind"],
        "language": got["language"],
        "via": got["via"],
    }
    if got["status"] != "ok":
        return [_textless_row(base, got["status"], got["reason"])]
    return [
        {
            **base,
            "chunk": i,
            "text": p["text"],
            "segments": p["segments"],
            "start_time": p["start"],
            "end_time": p["end"],
            "words": len(p["text"].split()),
            "status": "ok",
            "reason": None,
        }
        for i, p in enumerate(got["pieces"])
    ]


def _textless_row(base: dict, status: str, reason: str) -> dict:
    """The one row of a video that has no text, saying why."""
    empty = {"chunk": 0, "text": "", "segments": [], "start_time": None, "end_time": None, "words": 0}
    return {**base, **empty, "status": status, "reason": reason}


def _summarise(ctx: Any, tally: Counter, reasons: dict, fetcher: list, sources: Any) -> None:
    skipped_rows = sources.rows("status = 'skipped' AND source <> 'dataset'")
    upstream = Counter(r["availability"] or (r["reason"] or "").split(" (")[0] for r in skipped_rows)
    ctx.metrics.update(
        read=tally["read"],
        fetched=tally["fetched"],
        cached=tally["cached"],
        failed=dict(reasons["failed"]),
        skipped=dict(reasons["skipped"] + upstream),
    )
    if fetcher:
        ctx.metrics.update(
            requests=fetcher[0].requests,
            retries=len(fetcher[0].delays),
            backoff_seconds=round(sum(fetcher[0].delays), 3),
        )
    skipped, failed = reasons["skipped"] + upstream, reasons["failed"]
    ctx.log.info(
        "transcripts: %d read, %d fetched, %d cached, %d skipped%s, %d failed%s",
        tally["read"],
        tally["fetched"],
        tally["cached"],
        sum(skipped.values()),
        format_counts(skipped),
        sum(failed.values()),
        format_counts(failed),
    )
