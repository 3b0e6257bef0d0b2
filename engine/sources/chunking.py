"""Splitting a transcript into model-sized pieces.

`whole` (the default) keeps one piece per video: the original pipeline found that chunked
lectures produced questions whose answers lived in another chunk. `tokens` cuts very long videos
into windows of about `window_tokens` with `overlap_tokens` shared between neighbours; tokens are
estimated as words x 1.3 so no tokenizer is needed at this step. Each piece keeps the segments
(with timestamps) it covers.
"""

from __future__ import annotations

import math
from typing import Any

TOKENS_PER_WORD = 1.3


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)


def chunk_segments(
    segments: list[dict], mode: str = "whole", window_tokens: int = 6000, overlap_tokens: int = 300
) -> list[dict]:
    """Pieces {text, segments, start, end}; one piece when it fits or mode is `whole`."""
    words = [(w, i) for i, seg in enumerate(segments) for w in seg["text"].split()]
    window = max(1, int(window_tokens / TOKENS_PER_WORD))
    if mode == "whole" or len(words) <= window:
        return [_piece(segments, words, 0, len(words))]
    overlap = min(int(overlap_tokens / TOKENS_PER_WORD), window - 1)  # always move forward
    step = window - overlap
    pieces, begin = [], 0
    while True:
        end = min(begin + window, len(words))
        pieces.append(_piece(segments, words, begin, end))
        if end == len(words):
            return pieces
        begin += step


def _piece(segments: list[dict], words: list[tuple[str, int]], begin: int, end: int) -> dict[str, Any]:
    if not words:
        return {"text": "", "segments": list(segments), "start": 0.0, "end": 0.0}
    first, last = words[begin][1], words[end - 1][1]
    covered = segments[first : last + 1]
    return {
        "text": " ".join(w for w, _ in words[begin:end]),
        "segments": covered,
        "start": covered[0]["start"],
        "end": covered[-1]["start"] + covered[-1]["duration"],
    }
