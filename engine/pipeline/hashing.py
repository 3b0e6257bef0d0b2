"""The one canonical hash of the engine: sha256 over canonical JSON.

Step keys, run hashes, LLM cache keys and file digests all go through here so two parts of
the engine can never disagree on how a value is hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


@dataclasses.dataclass(frozen=True)
class Unkeyed:
    """A value carried along with a key's inputs that is never hashed (it hashes as {}): e.g.
    where a listed file lives, beside its keyed name and content digest."""

    value: Any = dataclasses.field(compare=False)


def _plain(value: Any) -> Any:
    """Turn config models, dataclasses, tuples, sets and paths into JSON-able values."""
    if isinstance(value, BaseModel):
        # A section's keyed() leaves out what changes speed, never results (concurrency, timeouts).
        keyed = value.keyed() if hasattr(value, "keyed") else dict(value)
        return {name: _plain(v) for name, v in keyed.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # compare=False marks bookkeeping (e.g. where the recipe file lives), never hashed
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    """sha256 hex of a value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (never its path or mtime)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
