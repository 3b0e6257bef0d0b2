"""A training step's sequences scored in two halves that run at once, on two CPU streams.

MLX runs every op of a stream on that stream's one thread. Only the BLAS products use the other
core (the BLAS's own threads); everything else of a step (norms, rotary embeddings, softmax,
SwiGLU, the loss's exp and reductions, copies) runs on one core while the other waits: a third
of a LoRA step's CPU time on this machine (perf, benchmarks/train_speed.py's setting).

Here the positions of a batch are cut in two halves. The first half goes through the model on
one stream, the second on another, reading the first half's keys and values through a cache
that concatenates them (so its attention is exactly the full sequence's causal attention); each
half's loss is its own sum and the two are added. The gradient is the same function's, summed
in another order (tests/models/test_models_cpu_streams.py). Each stream's thread does its own
half, BLAS products included, with the BLAS set to half of the cores per call, so both cores
are busy all the time: a 256-token LoRA step took 0.57 s instead of 0.69 s (README, "Measured"),
and other settings tried (4-30 LoRA blocks, batch 1-4, 256-1024 tokens a batch) 15-28% less.

Two things make the streams overlap in practice. MLX orders a graph's work breadth first up to
a width (MLX_BFS_MAX_WIDTH, 20 by default), then depth first, and keeps at most ~10 ops in
flight: with 20 the step's ops came out one half after the other and the step took 1.24 s.
engine.models.blas sets 48 before MLX is imported (BFS_WIDTH). The order is MLX's, so a width
can still serialize the halves of some graph: 32 did for the benchmark's step (0.99 s) and 64
for 16 LoRA blocks; 48 was the best or near it in all eight settings measured. And the backward
of the engine's custom functions (loss, softmax, SwiGLU) must run on its half's stream, not on
whichever stream is the default when MLX traces the backward: those functions are made once per
stream (`per_stream`), each with its backward pinned to its own stream.

Used only on a CPU, in a one-process run without gradient checkpointing, for models whose blocks
all cache with mlx-lm's plain KVCache (not sliding windows, state-space layers, ...) and for
sequences of at least MIN_LENGTH positions. RECIPE_TRAIN_STREAMS=1 turns it off.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from engine.models.blas import blas_threads, import_mlx

log = logging.getLogger("engine.models")

OFF_SWITCH = "RECIPE_TRAIN_STREAMS"  # "1": one stream, as before
# Shorter sequences run on one stream: at 128 positions (halves of 64) a step took the same time
# on one stream as on two (all 30 blocks LoRA'd, batch 1); at 256 and over, two were 15-28% faster.
MIN_LENGTH = 128
_ACTIVE: list[list[Any]] = []  # the two streams while a training run splits its steps
_STREAMS: list[Any] = []  # made once per process: each MLX stream owns a thread for good


class ChunkCache:
    """mlx-lm's key/value cache protocol (offset, update_and_fetch) over concatenated halves.

    Differentiable: the second half's attention reads the first half's keys and values as they
    are, so the gradient flows back through them into the first half."""

    def __init__(self) -> None:
        self.keys: Any = None
        self.values: Any = None
        self.offset = 0

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        mx = import_mlx()
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        self.offset += keys.shape[2]
        return self.keys, self.values


def takes_standard_cache(model: Any) -> bool:
    """Whether every block of `model` caches with mlx-lm's plain KVCache (what it makes for a
    prompt): not a sliding window's rotating cache, a state-space layer's state, ..."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    try:
        caches = make_prompt_cache(model)
        takes_cache = "cache" in inspect.signature(model.__call__).parameters
    except Exception as e:  # noqa: BLE001 - an architecture mlx-lm cannot cache: one stream, as before
        log.debug("no standard cache for %s: %s", type(model).__module__, e)
        return False
    return takes_cache and bool(caches) and all(type(c) is KVCache for c in caches)


def _two_streams() -> list[Any]:
    mx = import_mlx()
    if not _STREAMS:
        _STREAMS.extend([mx.default_stream(mx.cpu), mx.new_stream(mx.cpu)])
    return _STREAMS


@contextlib.contextmanager
def halves_on_two_streams(model: Any, world_size: int = 1, grad_checkpoint: bool = False) -> Iterator[bool]:
    """While inside, `summed_over_halves` splits long enough sequences of `model` over two CPU
    streams; yields whether it does."""
    mx = import_mlx()
    reason = None
    if os.environ.get(OFF_SWITCH, "").strip() == "1":
        reason = f"{OFF_SWITCH}=1"
    elif mx.default_device() != mx.cpu:
        reason = "the model runs on a GPU"
    elif world_size > 1:
        reason = "a distributed run (each rank is a process of its own)"
    elif grad_checkpoint:  # a recomputed block would append its keys to the cache a second time
        reason = "gradient checkpointing recomputes the blocks in the backward"
    elif not takes_standard_cache(model):
        reason = f"{type(model).__module__} keeps its own kind of cache"
    if reason:
        log.debug("training on one stream: %s", reason)
        yield False
        return
    cores = os.cpu_count() or 2
    with blas_threads(max(1, cores // 2)):
        _ACTIVE.append(_two_streams())
        try:
            yield True
        finally:
            _ACTIVE.pop()


def summed_over_halves(model: Any, length: int, part_loss: Callable[[int, int, Any], Any]) -> Any:
    """Σ part_loss(start, end, cache) over the parts of positions [0, length): two halves on two
    streams while `halves_on_two_streams` is on, else one part with cache None.

    part_loss runs the model on positions [start, end) with `cache` (one per block, shared by
    the parts in order) and returns the summed loss of those positions."""
    if not _ACTIVE or length < MIN_LENGTH:
        return part_loss(0, length, None)
    mx = import_mlx()
    cut = length // 2
    caches = [ChunkCache() for _ in model.layers]
    parts = []
    for stream, (start, end) in zip(_ACTIVE[-1], ((0, cut), (cut, length)), strict=True):
        with mx.stream(stream):
            parts.append(part_loss(start, end, caches))
    return parts[0] + parts[1]


def per_stream(make: Callable[[Any], Any], made: dict[Any, Any]) -> Any:
    """`make(stream)`'s function for the current default stream, made once per stream into `made`.

    A custom function's backward runs on the stream that is the default when MLX traces it,
    which is not the stream its forward ran on; `make` pins it to `stream` (see the module's
    docstring). The made functions live as long as the process (engine.models.cpu_swiglu says why)."""
    mx = import_mlx()
    stream = mx.default_stream(mx.default_device())
    key = repr(stream)  # "Stream(Device(cpu, 0), 1)": Stream has no public index
    if key not in made:
        made[key] = make(stream)
    return made[key]
