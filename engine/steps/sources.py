"""sources: list the videos of every source (local transcript files, YouTube channels/playlists/videos).

The listing is read in `fingerprint`, on every plan and run: its content (file bytes; video ids,
titles, durations, availability and filter decisions) keys this step and everything downstream,
so new uploads flow through while finished work is reused. Members-only, private, unavailable
and live videos become 'skipped' rows with the reason and are remembered in the store's
`video_status` cache, so explicit videos are not asked about again unless --retry-failed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from engine.errors import Problem
from engine.pipeline.hashing import digest_file
from engine.recipe.load import Located
from engine.recipe.paths import local_transcript_files
from engine.retry import RateLimiter
from engine.sources.settings import LocalSource, Source, TranscriptSettings, YoutubeSource
from engine.sources.transcript_cache import CACHE, STATUS_CACHE, cache_states
from engine.sources.youtube import PERSISTENT, Lister, apply_filters, format_counts, video_id
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "sources"
VERSION = 3
DEPENDS: tuple[str, ...] = ()
COLUMNS = {
    "video_id": "VARCHAR",
    "source": "VARCHAR",
    "title": "VARCHAR",
    "url": "VARCHAR",
    "path": "VARCHAR",
    "format": "VARCHAR",
    "digest": "VARCHAR",
    "duration": "DOUBLE",
    "upload_date": "VARCHAR",
    "availability": "VARCHAR",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
SECTION = "sources"
Settings = tuple[Source, ...]
# A list, not a section object, and required: a recipe without sources has nothing to learn from.
SECTION_FIELD = (Settings, Field(min_length=1, description="Where the videos come from; several sources are combined."))


@dataclass(frozen=True)
class Config:
    sources: tuple[LocalSource | YoutubeSource, ...]
    # The listing carries each video's transcript-cache history, whose key is the language preference.
    languages: tuple[str, ...]
    prefer_manual: bool
    # The lister's politeness (rate, retries, timeout): how, never what. compare=False: never keyed.
    transcripts: TranscriptSettings = field(compare=False)


def config(recipe: Recipe) -> Config:
    t: TranscriptSettings = recipe.transcripts
    return Config(recipe.sources, t.languages, t.prefer_manual, t)


def check(recipe: Recipe, located: Located) -> list[Problem]:
    problems = []
    for i, source in enumerate(recipe.sources):
        if source.type == "local" and not local_transcript_files(recipe.base_dir, source.path):
            shown = Path(source.path) if Path(source.path).is_absolute() else recipe.base_dir / source.path
            problems.append(
                located.problem(
                    ("sources", i, "path"),
                    f"no transcript files at {shown} (.txt .md .vtt .srt .json .json3); check the path, "
                    "which is relative to the recipe file",
                )
            )
        if source.type == "youtube":
            problems.extend(_youtube_problems(located, source, i))
    return problems


def _youtube_problems(located: Located, source: YoutubeSource, i: int) -> list[Problem]:
    problems = []
    if not source.url and not source.videos:
        problems.append(located.problem(("sources", i), "a youtube source needs `url` or `videos`"))
    for name in ("title_include", "title_exclude"):
        for j, pattern in enumerate(getattr(source, name)):
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(located.problem(("sources", i, name, j), f"bad regex {pattern!r}: {e}"))
    lo, hi = source.min_duration, source.max_duration
    if lo is not None and hi is not None and lo > hi:
        problems.append(located.problem(("sources", i, "min_duration"), f"{lo} is more than max_duration ({hi})"))
    return problems


def make_lister(cfg: TranscriptSettings) -> Lister:
    """The yt-dlp lister; tests replace this to inject a fake clock and sleep."""
    return Lister(cfg.retries, cfg.backoff, cfg.timeout, limiter=RateLimiter(cfg.requests_per_second))


def fingerprint(ctx: StepContext, cfg: Config) -> list[dict]:
    """Everything listed, in order: what keys this step and downstream."""
    listing: list[dict] = []
    lister: Lister | None = None
    for source in cfg.sources:
        if source.type == "local":
            listing.extend(_local_listing(ctx.base_dir, source, ctx))
            continue
        lister = lister or make_lister(cfg.transcripts)
        listing.extend(_youtube_listing(source, lister, ctx, cfg.transcripts))
    return _mark_duplicates(listing)


def _local_listing(base_dir: Path, source: Any, ctx: Any) -> list[dict]:
    entries = []
    for path in local_transcript_files(base_dir, source.path):
        meta = _sidecar(path, ctx) if source.sidecar else {}
        entries.append(
            {
                "kind": "local",
                "id": str(meta.get("video_id") or path.stem),
                "path": str(path),
                "digest": digest_file(path),
                "format": source.format,
                "meta": meta,
            }
        )
    return entries


def _sidecar(path: Path, ctx: Any) -> dict:
    """Optional `<stem>.meta.json` (title, url); a broken one is reported, not fatal."""
    sidecar = path.with_name(path.stem + ".meta.json")
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except ValueError as e:
        ctx.log.warning("%s: ignoring invalid metadata (%s)", sidecar, e)
        return {}
    return meta if isinstance(meta, dict) else {}


def _youtube_listing(
    source: YoutubeSource, lister: Lister, ctx: StepContext, transcripts: TranscriptSettings
) -> list[dict]:
    known = ctx.item_cache(STATUS_CACHE)
    retry = ctx.options.retry_failed
    entries = lister.list_url(source.url, dates=bool(source.after or source.before)) if source.url else []
    for ref in source.videos:
        cached = known.get(video_id(ref) or ref)
        entries.append(cached["entry"] if cached and not retry else lister.list_video(ref))
    entries = [_known_status(e, known, retry) for e in entries]
    marked = apply_filters(entries, source)
    states = transcript_states(ctx, [e["id"] for e in marked if e["status"] == "ok"], transcripts)
    out = []
    for entry in marked:
        _remember(entry, known)
        out.append({"kind": "youtube", **_stable(entry), "transcript": states.get(entry["id"])})
    return out


def transcript_states(ctx: StepContext, video_ids: list[str], cfg: TranscriptSettings) -> dict[str, str | None]:
    """Each video's cached transcript outcome: part of the key, so a transient failure (or
    --retry-failed) reruns the transcripts step while an unchanged channel reuses everything."""
    return cache_states(ctx.item_cache(CACHE), video_ids, cfg.languages, cfg.prefer_manual, ctx.options.retry_failed)


def _known_status(entry: dict, known: Any, retry: bool) -> dict:
    """A video found members-only/private when fetching stays skipped (until --retry-failed)."""
    cached = known.get(entry["id"])
    if cached and not retry and entry["availability"] == "public":
        return {**entry, "availability": cached["entry"]["availability"], "error": cached["entry"].get("error")}
    return entry


def _remember(entry: dict, known: Any) -> None:
    if entry["availability"] in PERSISTENT:
        known.put(entry["id"], {"entry": {k: v for k, v in entry.items() if k not in ("status", "reason")}})
    elif known.get(entry["id"]) is not None:
        known.delete(entry["id"])  # --retry-failed found it public again


def _stable(entry: dict) -> dict:
    """The fields that define downstream work. Approximate dates ("3 weeks ago") would change the
    hash every day, so only exact upload dates are kept (filters already used the approximate ones)."""
    keep = ("id", "title", "duration", "availability", "url", "source_url", "status", "reason")
    return {
        **{k: entry.get(k) for k in keep},
        "upload_date": entry.get("upload_date") if entry.get("exact_date") else None,
    }


def _mark_duplicates(listing: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for item in listing:
        if item["id"] in seen and item.get("status", "ok") == "ok":
            item = {**item, "status": "dropped", "reason": "listed twice"}
        seen.add(item["id"])
        out.append(item)
    return out


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    rows = [_local_row(item) if item["kind"] == "local" else _youtube_row(item) for item in ctx.fingerprint]
    _summarise(ctx, rows)
    return rows


def _local_row(item: dict) -> dict:
    path, meta = Path(item["path"]), item["meta"]
    return {
        "video_id": item["id"],
        "source": "local",
        "title": meta.get("title") or path.stem.replace("_", " "),
        "url": meta.get("url"),
        "path": str(path),
        "format": item["format"],
        "digest": item["digest"],
        "duration": None,
        "upload_date": meta.get("upload_date"),
        "availability": None,
        "status": item.get("status", "ok"),
        "reason": item.get("reason"),
    }


def _youtube_row(item: dict) -> dict:
    return {
        "video_id": item["id"],
        "source": "youtube",
        "title": item["title"],
        "url": item["url"],
        "path": None,
        "format": None,
        "digest": None,
        "duration": item["duration"],
        "upload_date": item["upload_date"],
        "availability": item["availability"],
        "status": item["status"],
        "reason": item["reason"],
    }


def _summarise(ctx: Any, rows: list[dict]) -> None:
    status = Counter(r["status"] for r in rows)
    skipped = Counter(r["availability"] for r in rows if r["status"] == "skipped")
    dropped = Counter(r["reason"] for r in rows if r["status"] == "dropped")
    ctx.metrics.update(videos=len(rows), ok=status["ok"], skipped=dict(skipped), dropped=dict(dropped))
    ctx.log.info(
        "sources: %d videos, %d to transcribe, %d skipped%s, %d dropped by filters, %d failed",
        len(rows),
        status["ok"],
        status["skipped"],
        format_counts(skipped),
        status["dropped"],
        status["failed"],
    )
