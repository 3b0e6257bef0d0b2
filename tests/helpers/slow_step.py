"""A test-only step that works item by item through an item cache, slowly enough to be killed.

It counts words of each transcript; every finished item is appended to a log file so a test can
tell which items were computed in which process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

NAME = "slowcount"
VERSION = 1
DEPENDS = ("transcripts",)
COLUMNS = {"video_id": "VARCHAR", "words": "BIGINT"}


def config(recipe):  # noqa: ANN001, ANN201
    return {}  # the delay is read at run time so killed and resumed runs share one key


def run(ctx, inputs, cfg):  # noqa: ANN001, ANN201
    cache = ctx.item_cache("slowcount")
    log = Path(os.environ["SLOW_LOG"])
    rows = []
    for row in sorted(inputs["transcripts"].ok_rows(), key=lambda r: r["video_id"]):
        words = cache.get(row["video_id"])
        if words is None:
            time.sleep(float(os.environ.get("SLOW_DELAY", "0")))
            words = len(row["text"].split())
            cache.put(row["video_id"], words)  # committed now: survives a kill
            with log.open("a") as f:
                f.write(f"{os.getpid()} {row['video_id']}\n")
        rows.append({"video_id": row["video_id"], "words": words})
    return rows
