"""transcripts: read and clean each video's transcript, keeping segment timestamps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.transcript_formats import MalformedTranscript, clean_segments, parse_file

NAME = "transcripts"
VERSION = 1
DEPENDS = ("sources",)
COLUMNS = {"video_id": "VARCHAR", "chunk": "INTEGER", "title": "VARCHAR", "kind": "VARCHAR",
           "text": "VARCHAR", "segments": "STRUCT(start DOUBLE, duration DOUBLE, text VARCHAR)[]",
           "words": "INTEGER", "status": "VARCHAR", "reason": "VARCHAR"}


def config(recipe: Any) -> Any:
    return recipe.transcripts


def run(ctx: Any, inputs: dict, cfg: Any) -> list[dict]:
    rows = []
    for video in inputs["sources"].ok_rows():
        rows.append(_one(ctx, video, cfg))
    failed = [r for r in rows if r["status"] != "ok"]
    ctx.metrics.update(read=len(rows) - len(failed), failed=len(failed))
    return rows


def _one(ctx: Any, video: dict, cfg: Any) -> dict:
    row = {"video_id": video["video_id"], "chunk": 0, "title": video["title"], "kind": "local"}
    try:
        segments = clean_segments(parse_file(Path(video["path"]), video["format"]), cfg.clean.strip_cues,
                                  cfg.clean.merge_overlaps, cfg.clean.normalize_whitespace)
    except MalformedTranscript as e:
        ctx.log.warning("skipping %s", e)
        return {**row, "text": "", "segments": [], "words": 0, "status": "failed", "reason": e.reason}
    text = " ".join(s["text"] for s in segments)
    return {**row, "text": text, "segments": segments, "words": len(text.split()), "status": "ok", "reason": None}
