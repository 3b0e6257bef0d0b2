"""Title and id filters that every source type shares (local files, YouTube, dataset rows)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def title_id_reason(title: str | None, ids: Iterable[str | None], source: Any) -> str | None:
    """Why `title_include` / `title_exclude` / `exclude_ids` drop an item, or None to keep it.

    `ids` are every id the item answers to (a dataset row: its group and its own id), so a user
    can leave out a whole group or a single row with the same field.
    """
    text = title or ""
    if any(i is not None and i in source.exclude_ids for i in ids):
        return "excluded id"
    if source.title_include and not any(re.search(p, text) for p in source.title_include):
        return "title does not match title_include"
    for pattern in source.title_exclude:
        if re.search(pattern, text):
            return f"title matches title_exclude {pattern!r}"
    return None
