"""Splitting a transcript into model-sized pieces.

`whole` (the default) keeps one piece per video: the original pipeline found that chunked
lectures produced questions whose answers lived in another chunk. `tokens` cuts very long videos
into windows of about `window_tokens` with `overlap_tokens` shared between neighbours; tokens are
estimated as words x 1.3 so no tokenizer is needed at this step. Scripts written without spaces
(Chinese, Japanese, Korean, Thai) add a token per character, so their estimate is not a few
"words" for a whole lecture. Each piece keeps the segments (with timestamps) it covers.
"""

from __future__ import annotations

import math
import re
from typing import Any

TOKENS_PER_WORD = 1.3
# Characters that tokenizers spend about a token each on, in scripts that use no spaces.
UNSPACED = re.compile(r"[\u0e00-\u0e7f\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.split()) * TOKENS_PER_WORD) + len(UNSPACED.findall(text))


def chunk_segments(
    segments: list[dict], mode: str = "whole", window_tokens: int = 6000, overlap_tokens: int = 300
) -> list[dict]:
    """Pieces {text, segments, start, end}; one piece when it fits or mode is `whole`.

    Windows are cut between words, each word costing its estimated tokens (in tenths, so sums
    are exact), so no window's estimate_tokens exceeds window_tokens unless one word alone does.
    """
    words = [(w, i) for i, seg in enumerate(segments) for w in seg["text"].split()]
    costs = [_tenths(w) for w, _ in words]
    window, overlap = window_tokens * 10, overlap_tokens * 10
    if mode == "whole" or sum(costs) <= window:
        return [_piece(segments, words, 0, len(words))]
    pieces, begin = [], 0
    while True:
        end, total = begin, 0
        while end < len(words) and (total + costs[end] <= window or end == begin):
            total += costs[end]
            end += 1
        pieces.append(_piece(segments, words, begin, end))
        if end == len(words):
            return pieces
        begin = _overlap_start(costs, begin, end, overlap)


def _tenths(word: str) -> int:
    return round(TOKENS_PER_WORD * 10) + 10 * len(UNSPACED.findall(word))


def _overlap_start(costs: list[int], begin: int, end: int, overlap: int) -> int:
    """Where the next window starts: as far back from `end` as `overlap` allows, always after `begin`."""
    start, shared = end, 0
    while start - 1 > begin and shared + costs[start - 1] <= overlap:
        shared += costs[start - 1]
        start -= 1
    return start


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
