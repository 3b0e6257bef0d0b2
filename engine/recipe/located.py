"""Plain recipe data together with where each key and list item sits in its file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import Problem

PathTuple = tuple[Any, ...]


@dataclass(frozen=True)
class Located:
    """Plain data plus where each key/item of it sits in the file (1-based line, col)."""

    data: Any
    positions: dict[PathTuple, tuple[int, int]]
    file: str

    def at(self, path: PathTuple) -> tuple[int, int]:
        """Position of `path`, or of its nearest ancestor present in the file."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def has(self, path: PathTuple) -> bool:
        return tuple(path) in self.positions

    def get(self, path: PathTuple) -> Any:
        """The raw value at `path`, or None where the data has no such key or item."""
        value = self.data
        for part in path:
            if isinstance(value, dict) and isinstance(part, str):
                value = value.get(part)
            elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
                value = value[part]
            else:
                return None
        return value

    def problem(self, path: PathTuple, message: str) -> Problem:
        line, col = self.at(path)
        return Problem(self.file, line, col, dotted(path), message)


def dotted(path: PathTuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
