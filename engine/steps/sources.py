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
from engine.pipeline.hashing import Unkeyed, digest_file
from engine.recipe.load import Located
from engine.recipe.paths import local_source_files, shown_path
from engine.retry import RateLimiter
from engine.sources.access import youtube_access
from engine.sources.settings import LocalSource, Source, TranscriptSettings, YoutubeSource
from engine.sources.transcript_cache import CACHE, STATUS_CACHE, cache_states
from engine.sources.youtube import PERSISTENT, Lister, apply_filters, format_counts, video_id
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "sources"
VERSION = 4  # 4: paths relative to the recipe, files that are not transcripts listed as skipped
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
        if source.type == "local":
            problems.extend(_local_problems(recipe, located, source, i))
        if source.type == "youtube":
            problems.extend(_youtube_problems(located, source, i))
    return problems


def _local_problems(recipe: Recipe, located: Located, source: LocalSource, i: int) -> list[Problem]:
    files = local_source_files(recipe.base_dir, source.path)
    if files.transcripts:
        return []
    shown = Path(source.path) if Path(source.path).is_absolute() else recipe.base_dir / source.path
    found = "; found only " + ", ".join(p.name for p, _ in files.skipped[:5]) if files.skipped else ""
    message = (
        f"no transcript files at {shown} (.txt .md .vtt .srt .json .json3){found}; check the path, "
        "which is relative to the recipe file"
    )
    return [located.problem(("sources", i, "path"), message)]


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


def make_lister(cfg: TranscriptSettings, base_dir: Path) -> Lister:
    """The yt-dlp lister (proxy and cookies of `transcripts`); tests replace this to inject a fake clock and sleep."""
    access = youtube_access(cfg, base_dir)
    return Lister(cfg.retries, cfg.backoff, cfg.timeout, limiter=RateLimiter(cfg.requests_per_second), access=access)


def fingerprint(ctx: StepContext, cfg: Config) -> dict:
    """Everything listed, in order: what keys this step and downstream.

    A local file is keyed by its name and its bytes, never by where it lives, so a project
    copied or cloned into another folder keeps every cached step.
    """
    listing: list[dict] = []
    ignored: list[dict] = []
    lister: Lister | None = None
    for source in cfg.sources:
        if source.type == "local":
            files = local_source_files(ctx.base_dir, source.path)
            listing.extend(_local_listing(ctx.base_dir, source, files.transcripts, ctx))
            ignored.extend(_ignored(ctx, source, files.skipped))
            continue
        lister = lister or make_lister(cfg.transcripts, ctx.base_dir)
        listing.extend(_youtube_listing(source, lister, ctx, cfg.transcripts))
    # Files that are not transcripts change no output, so they are kept out of the key: a stray
    # PDF must not rerun training. They are reported on every plan/run and become skipped rows.
    return {"listing": _mark_duplicates(listing), "ignored": Unkeyed(ignored)}


def _local_listing(base_dir: Path, source: LocalSource, paths: list[Path], ctx: Any) -> list[dict]:
    entries = []
    for path in paths:
        meta = _sidecar(path, ctx) if source.sidecar else {}
        try:
            content = digest_file(path)
        except OSError as e:  # unreadable: the transcripts step turns it into a failed row
            content = f"unreadable: {e.strerror or e}"
        entries.append(
            {
                "kind": "local",
                "id": str(meta.get("video_id") or path.stem),
                "name": path.name,
                "path": Unkeyed(shown_path(path, base_dir, source.path)),
                "digest": content,
                "format": source.format,
                "meta": meta,
            }
        )
    return entries


def _ignored(ctx: Any, source: LocalSource, skipped: list[tuple[Path, str]]) -> list[dict]:
    out = []
    for path, reason in skipped:
        shown = shown_path(path, ctx.base_dir, source.path)
        ctx.log.warning("%s: skipped, %s", shown, reason)
        out.append({"name": path.name, "path": shown, "reason": reason})
    return out


SIDECAR_FIELDS = ("video_id", "title", "url", "upload_date")


def _sidecar(path: Path, ctx: Any) -> dict:
    """Optional `<stem>.meta.json` (title, url); a broken one is reported, not fatal."""
    sidecar = path.with_name(path.stem + ".meta.json")
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        ctx.log.warning("%s: ignoring invalid metadata (%s)", sidecar, e)
        return {}
    if not isinstance(meta, dict):
        ctx.log.warning("%s: ignoring metadata that is not a JSON object", sidecar)
        return {}
    # only the fields we use, and only as text: a number or list here must not break the table
    return {k: str(meta[k]) for k in SIDECAR_FIELDS if isinstance(meta.get(k), (str, int, float)) and meta[k] != ""}


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
    listing, ignored = ctx.fingerprint["listing"], ctx.fingerprint["ignored"].value
    rows = [_local_row(item) if item["kind"] == "local" else _youtube_row(item) for item in listing]
    rows += [_ignored_row(item) for item in ignored]
    _summarise(ctx, rows)
    return rows


def _local_row(item: dict) -> dict:
    meta = item["meta"]
    return {
        "video_id": item["id"],
        "source": "local",
        "title": meta.get("title") or Path(item["name"]).stem.replace("_", " "),
        "url": meta.get("url"),
        "path": item["path"].value,  # relative to the recipe's folder (see shown_path)
        "format": item["format"],
        "digest": item["digest"],
        "duration": None,
        "upload_date": meta.get("upload_date"),
        "availability": None,
        "status": item.get("status", "ok"),
        "reason": item.get("reason"),
    }


def _ignored_row(item: dict) -> dict:
    """A file in a local source that is not a transcript: listed, so nothing vanishes silently."""
    empty = dict.fromkeys(("title", "url", "format", "digest", "duration", "upload_date", "availability"))
    return {
        **empty,
        "video_id": item["name"],
        "source": "local",
        "path": item["path"],
        "status": "skipped",
        "reason": item["reason"],
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
    skipped = Counter(r["availability"] or _reason_kind(r["reason"]) for r in rows if r["status"] == "skipped")
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


def _reason_kind(reason: str | None) -> str:
    """'not a transcript format (.pdf); ...' -> 'not a transcript format'."""
    return (reason or "unknown").split(" (")[0].split(";")[0]
