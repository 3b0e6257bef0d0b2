"""Sequence packing for training: several examples per row, attention kept inside each example.

A packed row holds whole examples one after the other; `segments` numbers them (1, 2, ..., 0 for
padding) and `weights` marks the tokens the loss counts (the completion, or every token but each
example's first when the prompt is not masked). The attention mask is block-diagonal and causal:
a token sees only the earlier tokens of its own example. Positions are not restarted: with
rotary embeddings the attention score of two tokens depends only on their distance, which is the
same at any offset in the row, so inside a block each example is scored as if it stood alone
(tests/models/test_models_packing.py checks the packed loss against one-example-per-row).

The mask reaches the model through its module's `scaled_dot_product_attention`, which every
mlx-lm model calls with mask="causal" on a full sequence; `attention_within_examples` swaps it
for the length of a training run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from engine.errors import RecipeError
from engine.models.blas import import_mlx
from engine.models.cpu_streams import ChunkCache, summed_over_halves

PAD_TO = 32  # row widths round up to a multiple of this: fewer distinct shapes to compile
_ACTIVE: list[Any] = []  # the block mask of the batch being scored, while its loss runs


def pack_rows(examples: list[tuple[list[int], int]], width: int) -> list[list[int]]:
    """Indices of `examples` (tokens, prompt length) per row, filled greedily in the given order.

    An example longer than `width` gets a row of its own (it is truncated, as without packing)."""
    rows: list[list[int]] = []
    used = width
    for i, (tokens, _) in enumerate(examples):
        size = min(len(tokens), width)
        if used + size > width:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += size
    return rows


def row_arrays(examples: list[tuple[list[int], int]], rows: list[list[int]], width: int) -> tuple[Any, ...]:
    """(tokens, segments, weights) numpy arrays of shape (len(rows), width)."""
    shape = (len(rows), width)
    tokens, segments, weights = np.zeros(shape, np.int32), np.zeros(shape, np.int32), np.zeros(shape, bool)
    for r, row in enumerate(rows):
        at = 0
        for s, i in enumerate(row, start=1):
            ids, prompt = examples[i]
            ids = ids[: width - at]
            tokens[r, at : at + len(ids)] = ids
            segments[r, at : at + len(ids)] = s
            weights[r, at + max(prompt, 1) : at + len(ids)] = True
            at += len(ids)
    return tokens, segments, weights


def iterate_packed(
    dataset: Any,
    batch_size: int,
    max_seq_length: int,
    loop: bool = False,
    seed: int | None = None,
    comm_group: Any = None,
) -> Iterator[tuple[Any, Any, Any]]:
    """mlx-lm's `iterate_batches` contract, with batches of packed rows.

    Each pass shuffles the examples (numpy's global state, as mlx-lm does), packs them into rows
    of at most `max_seq_length` tokens and yields `batch_size` rows at a time; under mlx.launch
    each rank takes its share of every batch's rows."""
    mx = import_mlx()
    rank, size = (comm_group.rank(), comm_group.size()) if comm_group is not None else (0, 1)
    if batch_size % size:
        raise ValueError("The batch size must be divisible by the number of workers")
    if seed is not None:
        np.random.seed(seed)
    items = [dataset[j] for j in range(len(dataset))]
    while True:
        order = np.random.permutation(len(items))
        shuffled = [items[j] for j in order]
        rows = pack_rows(shuffled, max_seq_length)
        for start in range(0, len(rows) - batch_size + 1, batch_size):
            mine = rows[start + rank : start + batch_size : size]
            longest = max(sum(min(len(shuffled[i][0]), max_seq_length) for i in row) for row in mine)
            width = min(max_seq_length, PAD_TO * -(-longest // PAD_TO))
            yield tuple(mx.array(a) for a in row_arrays(shuffled, mine, width))
        if not loop:
            break


def packed_loss(model: Any, tokens: Any, segments: Any, weights: Any) -> tuple[Any, Any]:
    """Mean cross-entropy over the weighted targets of packed rows, and their count (long rows
    in two halves on two CPU streams while engine.models.cpu_streams is on)."""
    mx = import_mlx()
    from engine.models.loss import cross_entropy

    inputs, targets, seen = tokens[:, :-1], tokens[:, 1:], segments[:, :-1]
    counted = weights[:, 1:] & (segments[:, 1:] == seen)  # a target of the same example only
    n = seen.shape[1]
    causal = mx.arange(n)[:, None] >= mx.arange(n)[None]
    block = ((seen[:, :, None] == seen[:, None, :]) & causal)[:, None]

    def part_loss(start: int, end: int, cache: Any) -> Any:
        # the queries of positions [start, end) against the keys of [0, end)
        _ACTIVE.append(block[:, :, start:end, :end])
        try:
            part = inputs[:, start:end]
            logits = model(part) if cache is None else model(part, cache=cache)
        finally:
            _ACTIVE.pop()
        return (cross_entropy(logits, targets[:, start:end]) * counted[:, start:end]).sum()

    ntoks = counted.sum()
    return summed_over_halves(model, n, part_loss) / ntoks, ntoks


def packed_tokens(batch: tuple[Any, ...]) -> int:
    """The targets `packed_loss` counts in a batch."""
    tokens, segments, weights = batch
    return int((weights[:, 1:] & (segments[:, 1:] == segments[:, :-1])).sum().item())


@contextlib.contextmanager
def attention_within_examples(model: Any) -> Iterator[None]:
    """While `packed_loss` runs the model, its causal attention is also block-diagonal."""
    module = sys.modules[type(model).__module__]
    original = getattr(module, "scaled_dot_product_attention", None)
    if original is None:
        raise RecipeError(
            f"train.pack: the {type(model).__module__} architecture does not use mlx-lm's shared "
            "attention function, so examples cannot be kept apart; set train.pack: false"
        )

    def attention(queries: Any, keys: Any, values: Any, cache: Any, scale: float, mask: Any, **kw: Any) -> Any:
        if not _ACTIVE:
            return original(queries, keys, values, cache, scale=scale, mask=mask, **kw)
        if not isinstance(cache, ChunkCache | None) or (mask is not None and not isinstance(mask, str)):
            raise RecipeError(
                f"train.pack: {type(model).__module__} attends with its own mask (e.g. a sliding "
                "window); packing cannot combine with it. Set train.pack: false"
            )
        # through the function this swap replaced (mlx-lm's, or engine.models.cpu_attention's)
        return original(queries, keys, values, None, scale=scale, mask=_ACTIVE[-1], **kw)

    setattr(module, "scaled_dot_product_attention", attention)  # noqa: B010 - a module global, swapped
    try:
        yield
    finally:
        setattr(module, "scaled_dot_product_attention", original)  # noqa: B010
