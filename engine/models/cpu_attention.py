"""Attention on CPU written from plain ops, so its softmax runs in fused kernels.

mlx-lm models attend through `mx.fast.scaled_dot_product_attention`. On CPU that falls back to
MLX's Softmax primitive, whose exp is scalar in the Linux wheel (~17 ns an element), and a
900-token prefill of SmolLM2 spends ~70% of its time there (9 heads x 900^2 scores x 30 layers).
Here the scores' softmax is an `mx.compile`d exp-and-normalize, which engine.models.native_jit
compiles for the CPU at hand: measured per layer, a 900-token prefill takes ~107 ms instead of
~179 ms and one decode step of 6 streams ~1.1 ms instead of ~1.5 ms.

Training uses it too, and a LoRA step of benchmarks/train_speed.py's setting took ~1.05 s
instead of ~1.16 s with mlx-lm's attention (the engine's own step, quiet machine, runs
alternating, 3 each; the figures above are from a busy 2-core machine). The softmax's backward is
written out rather than traced through the forward's ops, and grouped query heads share one
matmul per key/value head: a LoRA layer's attention forward and backward (compiled, 256 tokens)
takes ~7.5 ms instead of ~10.5 ms.

Every mlx-lm model reaches attention through its module's `scaled_dot_product_attention`
global (engine.models.packing swaps the same one, and calls through this one when it is in
place); `attending_on_cpu` wraps it while a generation or a training run uses the model, and
the wrapper hands anything unusual (a GPU, attention sinks, a quantized KV cache) back to
mlx-lm's function.
"""

from __future__ import annotations

import contextlib
from typing import Any

from engine.models.blas import import_mlx
from engine.models.cpu_streams import per_stream
from engine.models.swap import swapped_global

_SOFTMAX: dict[Any, Any] = {}  # per stream (engine.models.cpu_streams)


def _softmax(stream: Any) -> Any:
    """softmax over the last axis, with a backward written out instead of traced, run on `stream`.

    Forward: the row max (held constant: softmax does not depend on it, so its gradient is
    zero and MLX need not trace one), one fused exp(x - max), the row sum, one fused scale.
    Backward: ds = p * (dp - sum(dp * p)), one reduction and one fused kernel, where tracing the
    forward's ops took three reductions and a mask-and-count for the max."""
    mx = import_mlx()

    @mx.compile
    def shifted_exp(scores: Any, top: Any) -> Any:
        return mx.exp(scores - top)

    @mx.compile
    def normalized(exps: Any, total: Any) -> Any:
        return exps * (1.0 / total)

    @mx.compile
    def softmax_grad(probs: Any, grad: Any, rowdot: Any) -> Any:
        return probs * (grad - rowdot)

    @mx.custom_function
    def softmax(scores: Any) -> Any:
        exps = shifted_exp(scores, mx.stop_gradient(scores.max(axis=-1, keepdims=True)))
        return normalized(exps, exps.sum(axis=-1, keepdims=True))

    @softmax.vjp
    def softmax_vjp(primals: Any, grad: Any, probs: Any) -> Any:
        with mx.stream(stream):
            return softmax_grad(probs, grad, (grad * probs).sum(axis=-1, keepdims=True))

    return softmax


def attention(queries: Any, keys: Any, values: Any, scale: float, mask: Any) -> Any:
    """softmax(q k^T * scale + mask) v for (B, heads, L, D) queries and (B, kv_heads, S, D) keys.

    Grouped queries share their key/value head without copying the cache. `mask`
    is None, "causal" (the last L of S positions attend to everything before them) or an array,
    boolean (True = attend) or additive, broadcastable to (B, heads, L, S)."""
    mx = import_mlx()
    batch, heads, length, _ = queries.shape
    kv_heads, span = keys.shape[1], keys.shape[2]
    group = heads // kv_heads
    # Over several positions (training, prefill) a key/value head's query heads fold into the rows
    # of one matmul, instead of one per query head against a broadcast key: a third of the BLAS
    # calls and no sum over the broadcast in the backward (a LoRA layer's attention forward and
    # backward ~1 ms faster). A decoding step keeps one matrix-vector product per head, which
    # OpenBLAS runs faster than a product with `group` rows (0.9 vs 1.1 ms a layer, 6 streams).
    q = (queries * scale).reshape(batch, kv_heads, group, length, -1)
    if length > 1:
        q = q.reshape(batch, kv_heads, group * length, -1)
    else:
        keys, values = keys[:, :, None], values[:, :, None]
    scores = (q @ keys.swapaxes(-1, -2)).reshape(batch, kv_heads, group, length, span)
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"unknown attention mask {mask!r}")
        allowed = mx.arange(span - length, span)[:, None] >= mx.arange(span)[None]
        scores = mx.where(allowed, scores, mx.array(-mx.inf, scores.dtype))
    elif mask is not None:
        mask = _grouped(mask, heads, kv_heads)
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.array(-mx.inf, scores.dtype))
        else:
            scores = scores + mask.astype(scores.dtype)
    weights = per_stream(_softmax, _SOFTMAX)(scores.astype(mx.float32)).astype(values.dtype)
    return (weights.reshape(*q.shape[:-1], span) @ values).reshape(batch, heads, length, -1)


def _grouped(mask: Any, heads: int, kv_heads: int) -> Any:
    """A (.., heads or 1, L, S) mask laid out like the (B, kv_heads, group, L, S) scores."""
    if mask.ndim < 4:
        return mask
    if mask.shape[1] == 1:
        return mask[:, :, None]
    return mask.reshape(mask.shape[0], kv_heads, heads // kv_heads, *mask.shape[2:])


def attending_on_cpu(model: Any) -> contextlib.AbstractContextManager[None]:
    """While `model` generates or trains, its module attends through `attention` on the CPU
    (scoped and shared by concurrent users: engine.models.swap)."""
    return swapped_global(model, "scaled_dot_product_attention", _wrapping)


def _wrapping(original: Any) -> Any:
    mx = import_mlx()

    def scaled_dot_product_attention(
        queries: Any, keys: Any, values: Any, cache: Any, scale: float, mask: Any, sinks: Any = None, **kw: Any
    ) -> Any:
        unusual = sinks is not None or kw or hasattr(cache, "bits") or mx.default_device() != mx.cpu
        if unusual:
            return original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks, **kw)
        return attention(queries, keys, values, scale, mask)

    return scaled_dot_product_attention
