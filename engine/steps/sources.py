"""sources: list the videos of every source (local transcript files, YouTube channels/playlists/videos).

The listing is read in `fingerprint`, on every plan and run: its content (file bytes; video ids,
titles, durations, availability and filter decisions) keys this step and everything downstream,
so new uploads flow through while finished work is reused. Members-only, private, unavailable
and live videos become 'skipped' rows with the reason and are remembered in the store's
`video_status` cache, so explicit videos are not asked about again unless --retry-failed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from engine.pipeline.hashing import digest_file
from engine.recipe.paths import local_transcript_files
from engine.retry import RateLimiter
from engine.sources.youtube import PERSISTENT, Lister, apply_filters, format_counts, video_id

NAME = "sources"
VERSION = 2
DEPENDS: tuple[str, ...] = ()
COLUMNS = {"video_id": "VARCHAR", "source": "VARCHAR", "title": "VARCHAR", "url": "VARCHAR",
           "path": "VARCHAR", "format": "VARCHAR", "digest": "VARCHAR", "duration": "DOUBLE",
           "upload_date": "VARCHAR", "availability": "VARCHAR", "status": "VARCHAR", "reason": "VARCHAR"}
STATUS_CACHE = "video_status"


def config(recipe: Any) -> Any:
    return recipe.sources


def make_lister(recipe: Any) -> Lister:
    """The yt-dlp lister; tests replace this to inject a fake clock and sleep."""
    t = recipe.transcripts
    return Lister(t.retries, t.backoff, t.timeout, limiter=RateLimiter(t.requests_per_second))


def fingerprint(recipe: Any, ctx: Any) -> list[dict]:
    """Everything listed, in order: what keys this step and downstream."""
    listing: list[dict] = []
    lister: Lister | None = None
    for source in recipe.sources:
        if source.type == "local":
            listing.extend(_local_listing(recipe.base_dir, source, ctx))
            continue
        lister = lister or make_lister(recipe)
        listing.extend(_youtube_listing(source, lister, ctx))
    return _mark_duplicates(listing)


def _local_listing(base_dir: Path, source: Any, ctx: Any) -> list[dict]:
    entries = []
    for path in local_transcript_files(base_dir, source.path):
        meta = _sidecar(path, ctx) if source.sidecar else {}
        entries.append({"kind": "local", "id": str(meta.get("video_id") or path.stem), "path": str(path),
                        "digest": digest_file(path), "format": source.format, "meta": meta})
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


def _youtube_listing(source: Any, lister: Lister, ctx: Any) -> list[dict]:
    known = ctx.item_cache(STATUS_CACHE)
    retry = ctx.options.retry_failed
    entries = lister.list_url(source.url, dates=bool(source.after or source.before)) if source.url else []
    for ref in source.videos:
        cached = known.get(video_id(ref) or ref)
        entries.append(cached["entry"] if cached and not retry else lister.list_video(ref))
    entries = [_known_status(e, known, retry) for e in entries]
    marked = apply_filters(entries, source)
    states = transcript_states(ctx, [e["id"] for e in marked if e["status"] == "ok"])
    out = []
    for entry in marked:
        _remember(entry, known)
        out.append({"kind": "youtube", **_stable(entry), "transcript": states.get(entry["id"])})
    return out


def transcript_states(ctx: Any, video_ids: list[str]) -> dict[str, str | None]:
    """Each video's cached transcript outcome: part of the key, so a transient failure (or
    --retry-failed) reruns the transcripts step while an unchanged channel reuses everything."""
    from engine.steps import transcripts  # the cache belongs to the transcripts step

    return transcripts.cache_states(ctx, video_ids, ctx.recipe.transcripts)


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
    return {**{k: entry.get(k) for k in keep}, "upload_date": entry.get("upload_date") if entry.get("exact_date") else None}


def _mark_duplicates(listing: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for item in listing:
        if item["id"] in seen and item.get("status", "ok") == "ok":
            item = {**item, "status": "dropped", "reason": "listed twice"}
        seen.add(item["id"])
        out.append(item)
    return out


def run(ctx: Any, inputs: dict, cfg: Any) -> list[dict]:
    rows = [_local_row(item) if item["kind"] == "local" else _youtube_row(item) for item in ctx.fingerprint]
    _summarise(ctx, rows)
    return rows


def _local_row(item: dict) -> dict:
    path, meta = Path(item["path"]), item["meta"]
    return {"video_id": item["id"], "source": "local", "title": meta.get("title") or path.stem.replace("_", " "),
            "url": meta.get("url"), "path": str(path), "format": item["format"], "digest": item["digest"],
            "duration": None, "upload_date": meta.get("upload_date"), "availability": None,
            "status": item.get("status", "ok"), "reason": item.get("reason")}


def _youtube_row(item: dict) -> dict:
    return {"video_id": item["id"], "source": "youtube", "title": item["title"], "url": item["url"],
            "path": None, "format": None, "digest": None, "duration": item["duration"],
            "upload_date": item["upload_date"], "availability": item["availability"],
            "status": item["status"], "reason": item["reason"]}


def _summarise(ctx: Any, rows: list[dict]) -> None:
    status = Counter(r["status"] for r in rows)
    skipped = Counter(r["availability"] for r in rows if r["status"] == "skipped")
    dropped = Counter(r["reason"] for r in rows if r["status"] == "dropped")
    ctx.metrics.update(videos=len(rows), ok=status["ok"], skipped=dict(skipped), dropped=dict(dropped))
    ctx.log.info("sources: %d videos, %d to transcribe, %d skipped%s, %d dropped by filters, %d failed",
                 len(rows), status["ok"], status["skipped"], format_counts(skipped), status["dropped"],
                 status["failed"])

