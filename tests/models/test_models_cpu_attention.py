"""The engine's CPU attention: mlx-lm's answers and gradients, swapped in only while the engine generates or trains."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.models import cpu_attention
from engine.models.blas import import_mlx


def _qkv(batch: int, heads: int, kv_heads: int, length: int, span: int, dtype: str = "float32", seed: int = 0):
    mx = import_mlx()
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(batch, heads, length, 16)) * 2.0
    k = rng.normal(size=(batch, kv_heads, span, 16)) * 2.0
    v = rng.normal(size=(batch, kv_heads, span, 16))
    return tuple(mx.array(a.astype(np.float32)).astype(getattr(mx, dtype)) for a in (q, k, v))


def _close(ours, reference, tol: float) -> None:
    mx = import_mlx()
    np.testing.assert_allclose(
        np.array(ours.astype(mx.float32)), np.array(reference.astype(mx.float32)), rtol=tol, atol=tol
    )


@pytest.mark.parametrize(
    ("heads", "kv_heads", "length", "span"),
    # GQA prefill, MHA decode, tail after a cache, GQA decode (the per-head product path)
    [(9, 3, 37, 37), (4, 4, 1, 50), (6, 2, 5, 64), (8, 1, 33, 33), (9, 3, 1, 40)],
)
def test_causal_and_unmasked_attention_match_mlx(heads, kv_heads, length, span):
    mx = import_mlx()
    q, k, v = _qkv(2, heads, kv_heads, length, span)
    for mask in ("causal", None):
        ours = cpu_attention.attention(q, k, v, 0.25, mask)
        reference = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
        _close(ours, reference, 2e-5)


def test_array_masks_left_padding_and_additive_match_mlx():
    """The shapes mlx-lm's batch generation passes: (B, 1, L, S) booleans with left padding, and
    additive float masks, also per head."""
    mx = import_mlx()
    q, k, v = _qkv(3, 9, 3, 6, 20, seed=1)
    padding = np.array([0, 4, 11])  # row b's first keys are padding
    allowed = np.tril(np.ones((6, 20), dtype=bool), k=14)[None, None] & (np.arange(20) >= padding[:, None, None, None])
    boolean = mx.array(allowed)
    _close(
        cpu_attention.attention(q, k, v, 0.3, boolean),
        mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=boolean),
        2e-5,
    )
    additive = mx.array(np.where(np.broadcast_to(allowed, (3, 9, 6, 20)), 0.0, -1e9).astype(np.float32))
    _close(
        cpu_attention.attention(q, k, v, 0.3, additive),
        mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=additive),
        2e-5,
    )


@pytest.mark.parametrize("mask_kind", ["causal", "boolean", "additive"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_gradients_match_mlx_for_queries_keys_and_values(mask_kind: str, compiled: bool):
    """The softmax's written-out backward and the folded query heads give mlx-lm's gradients,
    with a long row of masked scores (a padded row) and as the training step runs it, compiled."""
    mx = import_mlx()
    q, k, v = _qkv(2, 9, 3, 24, 24, seed=3)
    causal = np.tril(np.ones((24, 24), dtype=bool))[None, None]
    allowed = causal & (np.arange(24) >= np.array([0, 17])[:, None, None, None])  # row 2: 17 keys of padding
    allowed |= np.eye(24, dtype=bool)  # every query keeps at least itself
    mask = {
        "causal": "causal",
        "boolean": mx.array(allowed),
        "additive": mx.array(np.where(allowed, 0.0, -1e9).astype(np.float32)),
    }[mask_kind]
    weights = mx.array(np.random.default_rng(4).normal(size=(2, 9, 24, 16)).astype(np.float32))

    def loss(attend):
        return lambda q, k, v: (attend(q, k, v) * weights).sum()

    ours = mx.value_and_grad(loss(lambda q, k, v: cpu_attention.attention(q, k, v, 0.3, mask)), argnums=(0, 1, 2))
    reference = mx.value_and_grad(
        loss(lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=mask)), argnums=(0, 1, 2)
    )
    if compiled:
        ours = mx.compile(ours)
    (our_loss, our_grads), (ref_loss, ref_grads) = ours(q, k, v), reference(q, k, v)
    _close(our_loss, ref_loss, 1e-4)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        _close(mine, theirs, 1e-4)


def test_half_precision_inputs_keep_their_dtype_and_values():
    mx = import_mlx()
    q, k, v = _qkv(1, 4, 2, 9, 9, dtype="bfloat16", seed=2)
    ours = cpu_attention.attention(q, k, v, 0.25, "causal")
    assert ours.dtype == mx.bfloat16
    _close(ours, mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal"), 3e-2)


def test_an_unknown_mask_name_is_refused():
    q, k, v = _qkv(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="unknown attention mask"):
        cpu_attention.attention(q, k, v, 1.0, "sliding")


class _QuantizedCache:
    bits = 8


def test_the_swap_lasts_as_long_as_the_generations_and_hands_unusual_calls_back(tiny_llama: Path):
    from mlx_lm import load

    model, _ = load(str(tiny_llama))
    module = sys.modules[type(model).__module__]
    original = module.scaled_dot_product_attention
    calls: list[str] = []

    def spy(queries, keys, values, cache, scale, mask, sinks=None, **kw):  # noqa: ANN001, ANN202
        calls.append("mlx-lm")
        return queries

    module.scaled_dot_product_attention = spy
    try:
        started, release = threading.Event(), threading.Event()

        def other_generation() -> None:
            with cpu_attention.attending_on_cpu(model):
                started.set()
                release.wait(10)

        worker = threading.Thread(target=other_generation)
        with cpu_attention.attending_on_cpu(model):
            swapped = module.scaled_dot_product_attention
            assert swapped is not spy
            worker.start()
            assert started.wait(10)
            q, k, v = _qkv(1, 2, 2, 4, 4)
            swapped(q, k, v, None, scale=1.0, mask="causal")
            assert calls == []  # ours, on the CPU
            swapped(q, k, v, _QuantizedCache(), scale=1.0, mask="causal")
            assert calls == ["mlx-lm"]  # a quantized KV cache goes back to mlx-lm
        assert module.scaled_dot_product_attention is swapped, "another generation is still running"
        release.set()
        worker.join(10)
        assert module.scaled_dot_product_attention is spy
    finally:
        module.scaled_dot_product_attention = original


def test_generation_gives_mlx_lms_greedy_tokens(tiny_llama: Path):
    """chat_generate (with the swap) against mlx-lm's batch_generate on the same weights (without)."""
    from mlx_lm import load
    from mlx_lm.generate import batch_generate

    from engine.models.generate import CPU_PREFILL_STEP, PrefixCache, chat_generate, chat_prompt_tokens

    model, tokenizer = load(str(tiny_llama))
    conversations = [
        [{"role": "user", "content": "Why does fasting lower insulin? " * repeats}] for repeats in (1, 3, 120)
    ]  # different lengths: the batch is left-padded and attends with an array mask
    ours = chat_generate(model, tokenizer, conversations, max_tokens=12, batch_size=3)
    prompts = [chat_prompt_tokens(tokenizer, c) for c in conversations]
    assert len(prompts[-1]) > 2 * CPU_PREFILL_STEP  # prefilled in several passes here, in one by mlx-lm
    theirs = batch_generate(model, tokenizer, prompts, max_tokens=12, prefill_batch_size=3, completion_batch_size=3)
    assert ours == [t.strip() for t in theirs.texts]
    cached = PrefixCache()
    first = chat_generate(model, tokenizer, conversations, max_tokens=12, batch_size=3, prefix_cache=cached)
    again = chat_generate(model, tokenizer, conversations, max_tokens=12, batch_size=3, prefix_cache=cached)
    assert first == again == ours


def _loss_and_gradients(model, loss, batch: tuple, ours: bool, packed: bool) -> tuple[float, dict]:  # noqa: ANN001
    """The loss and LoRA gradients, attending through the engine's CPU attention or mlx-lm's."""
    import contextlib

    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from engine.models.packing import attention_within_examples

    mx = import_mlx()
    with contextlib.ExitStack() as scope:
        if ours:
            scope.enter_context(cpu_attention.attending_on_cpu(model))
        if packed:  # entered second, as train_adapter does: its block mask goes through ours
            scope.enter_context(attention_within_examples(model))
        (value, _), grads = nn.value_and_grad(model, loss)(model, *batch)
        mx.eval(value, grads)
    return value.item(), dict(tree_flatten(grads))


@pytest.mark.parametrize("packed", [False, True], ids=["causal", "packed block mask"])
def test_training_gives_mlx_lms_loss_and_gradients(tiny_llama: Path, packed: bool, monkeypatch: pytest.MonkeyPatch):
    """A LoRA loss and its gradients through the swap equal those through mlx-lm's attention,
    for plain causal rows (with a prompt mask) and for packed rows' block mask (with padding)."""
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from engine.models.loss import train_loss
    from engine.models.packing import packed_loss

    mx = import_mlx()
    model, _ = load(str(tiny_llama))
    model.freeze()
    mx.random.seed(3)
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 20.0, "dropout": 0.0, "keys": None})
    lora = [m for _, m in model.named_modules() if hasattr(m, "lora_b")]
    for m in lora:  # B starts at zero, where no gradient reaches A: give every path a say
        m.lora_b = mx.random.normal(m.lora_b.shape) * 0.05
    rng = np.random.default_rng(5)
    tokens = mx.array(rng.integers(3, 250, size=(2, 41)))
    if packed:
        segments = mx.array(np.array([[1] * 15 + [2] * 20 + [0] * 6, [1] * 30 + [2] * 11]))
        batch, loss = (tokens, segments, segments > 0), packed_loss
    else:
        batch, loss = (tokens, mx.array([[0, 41], [5, 33]])), train_loss

    masks: list = []  # what reached the engine's attention: it must be in the path, not beside it
    attend = cpu_attention.attention
    monkeypatch.setattr(cpu_attention, "attention", lambda *a: masks.append(a[-1]) or attend(*a))
    reference = _loss_and_gradients(model, loss, batch, ours=False, packed=packed)
    assert masks == []
    ours = _loss_and_gradients(model, loss, batch, ours=True, packed=packed)
    assert len(masks) == len(model.layers) and all(isinstance(m, str) != packed for m in masks)
    assert ours[0] == pytest.approx(reference[0], rel=1e-5)
    assert ours[1].keys() == reference[1].keys() and len(ours[1]) == 2 * len(lora)
    for name, grad in reference[1].items():
        assert float(mx.abs(grad).max()) > 0, name
        _close(ours[1][name], grad, 2e-4)
