"""sources: list the videos of every source (local transcript files here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import RecipeError
from engine.hashing import digest_file
from engine.paths import local_transcript_files

NAME = "sources"
VERSION = 1
DEPENDS: tuple[str, ...] = ()
COLUMNS = {"video_id": "VARCHAR", "source": "VARCHAR", "title": "VARCHAR", "url": "VARCHAR",
           "path": "VARCHAR", "format": "VARCHAR", "digest": "VARCHAR", "status": "VARCHAR",
           "reason": "VARCHAR"}


def config(recipe: Any) -> Any:
    return recipe.sources


def fingerprint(recipe: Any, ctx: Any) -> list[dict]:
    """The bytes of every local file (and its sidecar): what keys this step and downstream."""
    listing = []
    for source in recipe.sources:
        if source.type != "local":
            raise RecipeError("youtube sources are not available in this version yet; "
                              "use `type: local` with downloaded transcript files for now")
        for path in local_transcript_files(recipe.base_dir, source.path):
            meta = _sidecar(path, ctx) if source.sidecar else {}
            listing.append({"path": str(path), "digest": digest_file(path), "format": source.format,
                            "meta": meta})
    return listing


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


def run(ctx: Any, inputs: dict, cfg: Any) -> list[dict]:
    rows = []
    for item in ctx.fingerprint:
        path, meta = Path(item["path"]), item["meta"]
        rows.append({"video_id": path.stem, "source": "local", "title": meta.get("title") or path.stem.replace("_", " "),
                     "url": meta.get("url"), "path": str(path), "format": item["format"],
                     "digest": item["digest"], "status": "ok", "reason": None})
    return rows
