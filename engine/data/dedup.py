"""Near-duplicate questions across a whole dataset, with rapidfuzz.

`process.cdist` compares normalised questions in row blocks against the rest of the dataset:
each block is a `block x n` uint8 matrix (20 MB for 1,000 x 20,000), never the full `n x n`.
Only the upper triangle is scored (block rows against themselves and later rows). Scores below
the threshold come back as 0 thanks to `score_cutoff`, so finding the pairs is one `nonzero`.
The default token_sort_ratio is plain ratio on pre-sorted tokens (SIMD-fast in cdist). For the
optional token_set_ratio an exact upper bound computed with matrix products first rules out ~98%
of pairs and only the rest are scored: the same pairs for ~15x less CPU (20,000 questions: ~35 s
CPU instead of ~500 s; benchmarks/dedup.py).
Pairs are merged with union-find into groups; each group keeps its best row (and any row not
directly similar to a kept one, so chains of loosely related questions are not collapsed).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Measured on 1,709 real Q&A pairs of a health channel (issue 13): token_set_ratio >= 85 dropped 96
# questions at ~75% precision (it scores 100 whenever one question's words are a subset of the
# other's, so "insulin" vs "testosterone" versions of one question collide); token_sort_ratio >= 85
# dropped 27 at 96% precision in 0.4 s.
DEFAULT_SCORER = "token_sort_ratio"

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, accents folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def scorer_by_name(name: str) -> Callable:
    from rapidfuzz import fuzz  # lazy: only curation needs it

    scorer = getattr(fuzz, name, None)
    if scorer is None:
        raise ValueError(f"unknown rapidfuzz scorer {name!r}")
    return scorer


def candidate_pairs(
    texts: Sequence[str],
    scorer: str = DEFAULT_SCORER,
    threshold: float = 85,
    workers: int = -1,
    block: int = 1000,
    prefilter: bool = True,
) -> list[tuple[int, int]]:
    """All pairs (i, j) with i < j and similarity >= threshold, exactly.

    token_set_ratio is ~40x slower in cdist than plain ratio, so for it an exact
    upper bound (see `TokenSetBound`) is computed with matrix products first and only the pairs
    that could reach the threshold are scored. token_sort_ratio becomes ratio on pre-sorted
    tokens. Other scorers go straight to cdist. `prefilter=False` is plain cdist (for tests).
    """
    if scorer == "token_set_ratio" and prefilter and threshold > 0 and len(texts) > block:
        bounded = _bounded_token_set_pairs(texts, threshold, block // 2)
        if bounded is not None:
            return bounded
    import numpy as np
    from rapidfuzz import process

    if scorer == "token_sort_ratio" and prefilter:
        # token_sort_ratio is ratio on sorted tokens: sort once, then use the SIMD ratio (~15x faster)
        texts, scorer = [" ".join(sorted(t.split())) for t in texts], "ratio"
    fn = scorer_by_name(scorer)
    found = []
    for start in range(0, len(texts), block):
        stop = min(len(texts), start + block)
        # uint8 keeps a block small; rapidfuzz applies the float cutoff before rounding
        scores = process.cdist(
            texts[start:stop], texts[start:], scorer=fn, dtype=np.uint8, score_cutoff=threshold, workers=workers
        )
        rows, cols = np.nonzero(scores)
        upper = cols > rows  # drop the diagonal and the block's lower triangle
        found.append(np.stack([rows[upper] + start, cols[upper] + start], axis=1))
    pairs = np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)
    empty = [i for i, t in enumerate(texts) if not t]  # two empty questions are not duplicates
    if empty:
        pairs = pairs[~np.isin(pairs, empty).any(axis=1)]
    return [(int(i), int(j)) for i, j in pairs.tolist()]


class TokenSetBound:
    """An upper bound of rapidfuzz's token_set_ratio for every pair, from matrix products.

    With token sets A, B (joined lengths La, Lb; sizes na, nb), shared set S (k tokens, m
    letters) and O = the overlap of the letter histograms of A and B, rapidfuzz returns the max of
      sect ratios  200 s / (La + s)  and  200 s / (Lb + s)   with s = len(joined S) = m + k - 1
      diff ratio   100 (1 - indel(A-B, B-A) / (La + Lb))  <=  100 (2 O + 2 min(na, nb) - 2) / (La + Lb)
    (the indel bound: a common subsequence of the differences uses at most O - m letters and
    min(na, nb) - k - 1 spaces). s is bounded by min(O, m*) + min(na, nb, k*) - 1 where k* and m*
    come from hashed token buckets: sum_b sqrt(x_b y_b) >= sum_b min(x_b, y_b) >= the shared part.
    O itself is a dot product of "unary" histograms ([count(c) >= j] features).
    """

    MAX_WIDTH = 4096  # letter features; big alphabets (CJK) make the products too costly

    def __init__(self, texts: Sequence[str], buckets: int = 1024):
        import zlib

        import numpy as np

        sets = [sorted(set(t.split())) for t in texts]
        self.n = np.array([len(x) for x in sets], dtype=np.float32)
        self.length = np.array([sum(map(len, x)) + len(x) - 1 if x else 0 for x in sets], dtype=np.float32)
        hists = [_letters(x) for x in sets]
        top: dict[str, int] = {}
        for h in hists:
            for c, v in h.items():
                top[c] = max(top.get(c, 0), v)
        offset, width = {}, 0
        for c in sorted(top):
            offset[c], width = width, width + top[c]
        if width > self.MAX_WIDTH:
            raise OverflowError(f"{width} letter features")
        self.unary = np.zeros((len(texts), max(width, 1)), dtype=np.float32)
        counts = np.zeros((len(texts), buckets), dtype=np.float32)
        lengths = np.zeros((len(texts), buckets), dtype=np.float32)
        for i, (h, tokens) in enumerate(zip(hists, sets, strict=True)):
            for c, v in h.items():
                self.unary[i, offset[c] : offset[c] + v] = 1.0
            for t in tokens:
                b = zlib.crc32(t.encode("utf-8")) % buckets
                counts[i, b] += 1
                lengths[i, b] += len(t)
        self.counts, self.lengths = np.sqrt(counts), np.sqrt(lengths)

    def mask(self, rows: slice, cols: slice, threshold: float) -> Any:
        """Boolean matrix: True where the pair might reach the threshold."""
        import numpy as np

        overlap = self.unary[rows] @ self.unary[cols].T
        k = self.counts[rows] @ self.counts[cols].T
        m = self.lengths[rows] @ self.lengths[cols].T
        na, nb = self.n[rows][:, None], self.n[cols][None, :]
        la, lb = self.length[rows][:, None], self.length[cols][None, :]
        fewest = np.minimum(na, nb)
        total = np.maximum(la + lb, 1.0)
        diff = 100.0 * (2 * overlap + 2 * fewest - 2) / total
        s = np.minimum(np.minimum(overlap, m) + np.minimum(fewest, k) - 1, np.minimum(la, lb))
        s = np.maximum(s, 0.0)
        sect = 100.0 * 2 * s / np.maximum(np.minimum(la, lb) + s, 1.0)
        slack = 1e-3 * 100  # float32 rounding in the products never hides a pair
        return (np.maximum(diff, sect) >= threshold - slack) & (na > 0) & (nb > 0)


def _letters(tokens: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in tokens:
        for c in t:
            counts[c] = counts.get(c, 0) + 1
    return counts


def _bounded_token_set_pairs(texts: Sequence[str], threshold: float, block: int) -> list[tuple[int, int]] | None:
    """Pairs via the bound, or None when the alphabet is too big for it (then plain cdist)."""
    import numpy as np
    from rapidfuzz import fuzz

    try:
        bound = TokenSetBound(texts)
    except OverflowError:
        return None
    pairs = []
    for start in range(0, len(texts), block):
        stop = min(len(texts), start + block)
        rows, cols = np.nonzero(bound.mask(slice(start, stop), slice(start, None), threshold))
        upper = cols > rows
        for i, j in zip((rows[upper] + start).tolist(), (cols[upper] + start).tolist(), strict=True):
            if fuzz.token_set_ratio(texts[i], texts[j], score_cutoff=threshold) >= threshold:
                pairs.append((i, j))
    return pairs


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]  # path halving
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass(frozen=True)
class Duplicate:
    index: int  # the row removed
    kept: int  # the kept row it duplicates
    similarity: float  # similarity of the removed and the kept question
    group: int  # smallest row index of its union-find group (for auditing groups)


def find_duplicates(
    questions: Sequence[str],
    scores: Sequence[float],
    scorer: str = DEFAULT_SCORER,
    threshold: float = 85,
    workers: int = -1,
    block: int = 1000,
) -> list[Duplicate]:
    """Rows to remove, each with the kept row it duplicates.

    Union-find groups connected duplicates; inside a group rows are visited best score first
    (ties: earlier row) and a row is removed only if it is itself similar to a row already kept.
    Plain connected components would chain A~B~C~D and keep one row of a whole family of
    distinct questions; this way every removed row has a direct, auditable partner.
    """
    texts = [normalise(q) for q in questions]
    pairs = candidate_pairs(texts, scorer, threshold, workers, block)
    uf = UnionFind(len(texts))
    neighbours: dict[int, set[int]] = {}
    for i, j in pairs:
        uf.union(i, j)
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    groups: dict[int, list[int]] = {}
    for idx in sorted(neighbours):
        groups.setdefault(uf.find(idx), []).append(idx)
    fn = scorer_by_name(scorer)
    removed = []
    for root, members in groups.items():
        order = sorted(members, key=lambda x: (-scores[x], x))
        rank = {m: r for r, m in enumerate(order)}
        kept: set[int] = set()
        for m in order:
            partners = [k for k in neighbours[m] if k in kept]
            if not partners:
                kept.add(m)
                continue
            best = min(partners, key=rank.__getitem__)  # the best-ranked kept partner
            removed.append(Duplicate(m, best, round(float(fn(texts[m], texts[best])), 2), root))
    return sorted(removed, key=lambda d: d.index)
