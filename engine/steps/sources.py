"""sources: list the videos of every source (local transcript files, YouTube channels/playlists/videos)
and read the rows of every dataset source (existing question/answer pairs).

The listing is read in `fingerprint`, on every plan and run: its content (file bytes; video ids,
titles, durations, availability and filter decisions) keys this step and everything downstream,
so new uploads flow through while finished work is reused. Members-only, private, unavailable
and live videos become 'skipped' rows with the reason and are remembered in the store's
`video_status` cache, so explicit videos are not asked about again unless --retry-failed.

Dataset rows (source 'dataset') carry their question and answer in this table: the transcripts
and questions steps pass them by, and the answers step appends them to its own rows, so curate
reads one table. They are keyed by each file's bytes (an hf:// file by its rows), never its path.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from engine.errors import DatasetUnreadable, Problem
from engine.pipeline.hashing import Unkeyed, digest, digest_file
from engine.recipe.load import Located
from engine.recipe.paths import local_source_files, locate, shown_path
from engine.retry import RateLimiter
from engine.sources import dataset
from engine.sources.access import youtube_access
from engine.sources.filters import title_id_reason
from engine.sources.settings import DatasetSource, LocalSource, Source, TranscriptSettings, YoutubeSource
from engine.sources.transcript_cache import CACHE, STATUS_CACHE, cache_states
from engine.sources.youtube import PERSISTENT, Lister, apply_filters, format_counts, video_id
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "sources"
VERSION = 5  # 5: dataset sources (rows with question/answer), title/id filters on local files
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
    # dataset rows only (null for videos): the row's own id and its question/answer pair
    "id": "VARCHAR",
    "question": "VARCHAR",
    "answer": "VARCHAR",
    "tags": "VARCHAR[]",
    "system": "VARCHAR",  # a chat row's system turn: kept here, the answers table has no place for it
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "video_id": "The video's id: the YouTube id; a local file's sidecar video_id, else its name without extension.",
    "source": "Where the row comes from: youtube | local | dataset.",
    "title": "The video's title (a local file: its sidecar's title, else one made from its name).",
    "url": "The video's URL (a local file: its sidecar's, else NULL).",
    "path": "The local file, relative to the recipe's folder (NULL for YouTube videos).",
    "format": "The local or dataset file's format as the recipe gives it (auto: by extension); NULL for YouTube.",
    "digest": "sha256 of the local file's bytes: what keys this step (NULL for YouTube videos).",
    "duration": "The video's length in seconds, when the listing gives it (NULL for local files).",
    "upload_date": "The video's upload date (YYYY-MM-DD), when the listing or a sidecar gives it.",
    "availability": "Why YouTube withholds the video (e.g. members-only); NULL when available.",
    "id": "A dataset row's own id (NULL for videos).",
    "question": "A dataset row's question (NULL for videos).",
    "answer": "A dataset row's answer (NULL for videos).",
    "tags": "A dataset row's tags (empty for videos).",
    "system": "A dataset chat row's system turn (NULL for videos and rows without one).",
}
SECTION = "sources"
Settings = tuple[Source, ...]
# A list, not a section object, and required: a recipe without sources has nothing to learn from.
SECTION_FIELD = (Settings, Field(min_length=1, description="Where the videos come from; several sources are combined."))


@dataclass(frozen=True)
class Config:
    sources: tuple[LocalSource | YoutubeSource | DatasetSource, ...]
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
        problems.extend(_regex_problems(located, source, i))
        if source.type == "local":
            problems.extend(_local_problems(recipe, located, source, i))
        if source.type == "youtube":
            problems.extend(_youtube_problems(located, source, i))
        if source.type == "dataset":
            problems.extend(_dataset_problems(recipe, located, source, i))
    return problems


def _regex_problems(located: Located, source: Source, i: int) -> list[Problem]:
    problems = []
    for name in ("title_include", "title_exclude"):
        for j, pattern in enumerate(getattr(source, name)):
            try:
                re.compile(pattern)
            except re.error as e:
                problems.append(located.problem(("sources", i, name, j), f"bad regex {pattern!r}: {e}"))
    return problems


def _dataset_problems(recipe: Recipe, located: Located, source: DatasetSource, i: int) -> list[Problem]:
    """What is cheap to know before running: the files exist and their format is known.

    The columns are checked when the files are read (plan and run), against what DuckDB finds.
    """
    problems = []
    if source.messages is not None and {"question", "answer"} & source.columns.model_fields_set:
        problems.append(
            located.problem(
                ("sources", i, "messages"),
                "set either `messages` (chat data) or `columns.question`/`columns.answer`, not both",
            )
        )
    if dataset.is_remote(source.path):
        if not dataset.HF_PATH.match(source.path):
            message = f"{source.path!r} is not hf://datasets/<org>/<name>/<file> (a file or glob inside the dataset)"
            problems.append(located.problem(("sources", i, "path"), message))
        elif dataset.file_format(source.path, source.format) is None:
            problems.append(_unknown_format(located, i, Path(source.path)))
        return problems
    files = dataset.data_files(recipe.base_dir, source.path)
    if not files:
        shown = Path(source.path) if Path(source.path).is_absolute() else recipe.base_dir / source.path
        message = f"no data file at {shown}; check the path, which is relative to the recipe file"
        return [*problems, located.problem(("sources", i, "path"), message)]
    unknown = [p for p in files if dataset.file_format(str(p), source.format) is None]
    return problems + [_unknown_format(located, i, p) for p in unknown[:3]]


def _unknown_format(located: Located, i: int, path: Path) -> Problem:
    known = " ".join(dataset.EXTENSIONS)
    message = f"{path.name}: unknown data format ({path.suffix or 'no extension'}); name it {known} or set `format`"
    return located.problem(("sources", i, "format"), message)


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
    for i, source in enumerate(cfg.sources):
        if source.type == "local":
            files = local_source_files(ctx.base_dir, source.path)
            listing.extend(_local_listing(ctx.base_dir, source, files.transcripts, ctx))
            ignored.extend(_ignored(ctx, source, files.skipped))
            continue
        if source.type == "dataset":
            listing.append(_dataset_listing(ctx.base_dir, source, i))
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
        entry = {
            "kind": "local",
            "id": str(meta.get("video_id") or path.stem),
            "name": path.name,
            "path": Unkeyed(shown_path(path, base_dir, source.path)),
            "digest": content,
            "format": source.format,
            "meta": meta,
        }
        if (reason := title_id_reason(_local_title(entry), (str(entry["id"]),), source)) is not None:
            entry.update(status="dropped", reason=reason)
        entries.append(entry)
    return entries


def _local_title(item: dict) -> str:
    return item["meta"].get("title") or Path(item["name"]).stem.replace("_", " ")


def _dataset_listing(base_dir: Path, source: DatasetSource, i: int) -> dict:
    """A dataset source's files, keyed by content: a local file by its bytes, an hf:// file by
    its rows (read here, on every plan: there are no bytes to hash without downloading it)."""
    where = f"sources[{i}]"
    if dataset.is_remote(source.path):
        fmt = dataset.file_format(source.path, source.format) or "parquet"
        table = dataset.read_table(source.path, fmt, f"{where} ({source.path})")
        content = digest(json.dumps(table.records, default=str, sort_keys=True))
        files = [{"digest": content, "format": fmt, "path": Unkeyed(source.path), "table": Unkeyed(table)}]
        return {"kind": "dataset", "where": Unkeyed(where), "files": files}
    paths = dataset.data_files(base_dir, source.path)
    if not paths:  # check() says so before a run; a file removed since is the same mistake
        raise DatasetUnreadable(f"{where}: no data file at {base_dir / source.path}; check `path`")
    files = []
    for path in paths:
        fmt = dataset.file_format(str(path), source.format) or "jsonl"
        shown = Unkeyed(shown_path(path, base_dir, source.path))
        files.append({"digest": digest_file(path), "format": fmt, "path": shown})
    # in content order: renaming the files of a glob must not reorder (and so rekey) them
    files.sort(key=lambda f: (f["digest"], f["format"]))
    return {"kind": "dataset", "where": Unkeyed(where), "files": files}


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
        if item["kind"] == "dataset":  # its rows are marked when they are read
            out.append(item)
            continue
        if item["id"] in seen and item.get("status", "ok") == "ok":
            item = {**item, "status": "dropped", "reason": "listed twice"}
        seen.add(item["id"])
        out.append(item)
    return out


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    listing, ignored = ctx.fingerprint["listing"], ctx.fingerprint["ignored"].value
    rows: list[dict] = []
    for item, source in _with_sources(listing, cfg.sources):
        if item["kind"] == "dataset":
            rows.extend(_dataset_rows(ctx, item, source))
        else:
            rows.append(_local_row(item) if item["kind"] == "local" else _youtube_row(item))
    rows += [_ignored_row(item) for item in ignored]
    rows = [{**VIDEO_ONLY, **row} for row in _mark_repeated_rows(rows)]
    _summarise(ctx, rows)
    return rows


# The columns only a dataset row fills, empty on a video's row.
VIDEO_ONLY: dict[str, Any] = {"id": None, "question": None, "answer": None, "tags": [], "system": None}


def _with_sources(listing: list[dict], sources: tuple) -> list[tuple[dict, Any]]:
    """Each dataset entry with the source it came from (its column map and filters)."""
    datasets = iter(s for s in sources if s.type == "dataset")
    return [(item, next(datasets) if item["kind"] == "dataset" else None) for item in listing]


def _dataset_rows(ctx: StepContext, item: dict, source: DatasetSource) -> list[dict]:
    where = item["where"].value
    rows = []
    for file in item["files"]:
        shown = file["path"].value
        table = file["table"].value if "table" in file else _read_local(ctx, shown, file["format"])
        layout = dataset.layout(source, table.columns, shown, where)
        rows.extend(dataset.rows_of(source, table, layout, file["digest"], shown, file["format"]))
    return rows


def _read_local(ctx: StepContext, shown: str, fmt: str) -> dataset.Table:
    return dataset.read_table(str(locate(shown, ctx.base_dir)), fmt, shown)


def _mark_repeated_rows(rows: list[dict]) -> list[dict]:
    """A dataset row seen before (same group, question and answer) is dropped: one id, one row."""
    seen: Counter = Counter()
    for row in rows:
        if row.get("source") != "dataset" or row["status"] != "ok":
            continue
        seen[row["id"]] += 1
        if seen[row["id"]] > 1:  # an id of its own, so the table still has one row per id
            again = dataset.row_digest([row["id"], "again", seen[row["id"]]])
            row.update(id=again, status="dropped", reason="the same row again (same group, question and answer)")
    return rows


def _local_row(item: dict) -> dict:
    meta = item["meta"]
    return {
        "video_id": item["id"],
        "source": "local",
        "title": _local_title(item),
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
    data = [r for r in rows if r["source"] == "dataset"]
    if data:
        _summarise_dataset(ctx, data)
    rows = [r for r in rows if r["source"] != "dataset"]
    if data and not rows:
        return  # a recipe of datasets only: no line about videos it never had
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


def _summarise_dataset(ctx: Any, rows: list[dict]) -> None:
    status = Counter(r["status"] for r in rows)
    # "no answer (row 12 of qa.jsonl)" -> "no answer": counts by kind; each row keeps where it is
    dropped = Counter((r["reason"] or "").rsplit(" (row ", 1)[0] for r in rows if r["status"] == "dropped")
    systems = sum(1 for r in rows if r["system"])
    ctx.metrics["dataset"] = {"rows": len(rows), "ok": status["ok"], "dropped": dict(dropped), "system_turns": systems}
    ctx.log.info(
        "sources: %d dataset rows, %d kept, %d dropped%s",
        len(rows),
        status["ok"],
        status["dropped"],
        format_counts(dropped),
    )
    if systems:
        ctx.log.warning(
            "sources: %d chat rows have a system turn; it is kept in the sources table only (training uses "
            "split.system_prompt)",
            systems,
        )


def _reason_kind(reason: str | None) -> str:
    """'not a transcript format (.pdf); ...' -> 'not a transcript format'."""
    return (reason or "unknown").split(" (")[0].split(";")[0]
