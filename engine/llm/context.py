"""How much text a model can read: its context window, and the room a transcript has in it.

The questions and answers passes send a whole transcript (or chunk) in one prompt. A transcript
longer than the model's context either fails at the provider after money was spent on the
others, or is silently cut by a local server. The transcripts step asks here how many tokens
of transcript fit, before anything is sent.

Where the context comes from, without network:
  mlx:<spec>          the local model's own files: a GGUF's `<arch>.context_length`, a folder's
                      config.json `max_position_embeddings`
  anything else       litellm's bundled model list (`get_model_info(model)["max_input_tokens"]`);
                      litellm takes seconds to import, so the answer is memoised in the store
                      per model and litellm version, and litellm is imported only on a miss
  unknown             DEFAULT_CONTEXT, conservative: most models served today read at least that
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from engine.errors import RecipeError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 8192
# Tokens are estimated as words x 1.3 (engine.sources.chunking), the average of English speech
# for GPT-like tokenizers; small-vocabulary local models and other languages need more, so a
# transcript is given only this share of the room that is left.
HEADROOM = 0.85
# The answers prompt lists the video's questions; this many tokens are kept for each.
TOKENS_PER_QUESTION = 40


@dataclass(frozen=True)
class Reader:
    """An LLM pass that reads whole transcripts: its model, its reply budget, its own prompt."""

    name: str
    model: str
    max_tokens: int
    prompt_tokens: int  # the prompt around the transcript (templates, questions), estimated


@dataclass(frozen=True)
class Room:
    """The tokens of transcript that fit every reader, and the reader that limits it."""

    tokens: int
    reader: str  # the pass
    model: str
    context: int
    source: str  # where the context number comes from

    def explain(self) -> str:
        left = f"~{self.tokens} tokens" if self.tokens > 0 else "no room"
        return (
            f"the {self.reader} pass's model {self.model} reads {self.context} tokens ({self.source}), "
            f"which leaves {left} for the transcript after the prompt and max_tokens"
        )


def transcript_room(readers: tuple[Reader, ...], base_dir: Path, memo: Any = None, override: int | None = None) -> Room:
    """The smallest room any reader leaves for a transcript (negative: none at all)."""
    rooms = []
    for reader in readers:
        context, source = (override, "transcripts.chunking.context_tokens") if override else (None, "")
        if context is None:
            context, source = context_window(reader.model, base_dir, memo)
        left = context - reader.max_tokens - reader.prompt_tokens
        rooms.append(Room(int(left * HEADROOM) if left > 0 else left, reader.name, reader.model, context, source))
    if not rooms:
        return Room(int(DEFAULT_CONTEXT * HEADROOM), "-", "-", DEFAULT_CONTEXT, "default")
    return min(rooms, key=lambda r: r.tokens)


def context_window(model: str, base_dir: Path, memo: Any = None) -> tuple[int, str]:
    """(input tokens the model reads, where that number comes from)."""
    if model.startswith("mlx:"):
        found = _local_context(model.removeprefix("mlx:"), base_dir)
        return (found, "the model's files") if found else (DEFAULT_CONTEXT, "unknown model: default")
    found = _provider_context(model, memo)
    return (found, "litellm's model list") if found else (DEFAULT_CONTEXT, "unknown to litellm: default")


def _provider_context(model: str, memo: Any) -> int | None:
    try:
        version = metadata.version("litellm")
    except metadata.PackageNotFoundError:
        return None
    key = f"{model}|litellm {version}"
    known = memo.get(key) if memo is not None else None
    if known is None:
        known = {"tokens": _litellm_lookup(model)}
        if memo is not None:
            memo.put(key, known)
    return known["tokens"]


def _litellm_lookup(model: str) -> int | None:
    from engine.llm.providers import load_litellm  # seconds to import: only on a memo miss

    try:
        info = load_litellm().get_model_info(model)
    except Exception:  # noqa: BLE001 - litellm raises plain Exceptions for models it does not map
        return None
    tokens = info.get("max_input_tokens") or info.get("max_tokens")
    return int(tokens) if isinstance(tokens, (int, float)) and tokens > 0 else None


def _local_context(spec: str, base_dir: Path) -> int | None:
    from engine.models.resolve import package_file

    try:
        path = package_file(spec) if spec.startswith("package:") else Path(spec).expanduser()
    except RecipeError:
        return None
    if not path.is_absolute() and (base_dir / path).exists():
        path = base_dir / path
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_context_length(path)
    if path.is_dir() and (path / "config.json").is_file():
        return _config_context(path / "config.json")
    return None


def _config_context(config: Path) -> int | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = data.get(name) if isinstance(data, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


# -- the GGUF header, read only as far as the context length (the gguf package maps the whole
#    file and parses every field: ~2 s for a 100 MB model, on every plan) ----------------------

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def gguf_context_length(path: Path) -> int | None:
    """`<architecture>.context_length` from a GGUF file's metadata; None if absent or unreadable."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF" or _read(f, "I") < 2:
                return None
            _read(f, "Q")  # tensor count
            for _ in range(min(_read(f, "Q"), 1_000_000)):
                key = _string(f)
                value = _value(f, _read(f, "I"))
                if key.endswith(".context_length") and isinstance(value, int):
                    return value
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
    return None


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)[0]


def _string(f: BinaryIO) -> str:
    length = _read(f, "Q")
    if length > 1 << 24:
        raise ValueError("implausible GGUF string")
    return f.read(length).decode("utf-8")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = _read(f, "I"), _read(f, "Q")
        if item in _SCALARS:  # skipped in one seek: vocabularies hold ~100k of them
            f.seek(struct.calcsize("<" + _SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")
