"""The training data files: mlx-lm chat JSONL, one {"messages": [...]} object per line.

The split step writes them; training and evaluation read them back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of one data/*.jsonl file ([] when that split is absent)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def chat_messages(question: str, answer: str, system: str | None) -> dict[str, Any]:
    """One training example in the chat layout mlx-lm trains on."""
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": msgs}
