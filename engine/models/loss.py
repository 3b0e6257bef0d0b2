"""Loss of a model on chat conversations, counted on the assistant tokens only."""

from __future__ import annotations

import math
from typing import Any

from engine.models.blas import import_mlx
from engine.models.cpu_streams import per_stream, summed_over_halves


def assistant_spans(tokenizer: Any, conversation: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    """Full token ids and the [start, end) spans of every assistant message's tokens.

    Spans come from rendering growing prefixes of the conversation: the tokens an assistant
    message adds (after its prompt with the generation header) are the ones it is scored on.
    """
    tokens = list(tokenizer.apply_chat_template(conversation, tokenize=True))
    spans = []
    for i, message in enumerate(conversation):
        if message.get("role") != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(conversation[:i], add_generation_prompt=True, tokenize=True))
        end = len(tokenizer.apply_chat_template(conversation[: i + 1], tokenize=True))
        spans.append((start, end))
    return tokens, spans


def conversation_loss(model: Any, tokenizer: Any, conversations: list[list[dict]]) -> dict:
    """Mean cross-entropy per assistant token over all conversations: {loss, tokens, perplexity}."""
    mx = import_mlx()
    import mlx.nn as nn

    total, count = 0.0, 0
    for conversation in conversations:
        tokens, spans = assistant_spans(tokenizer, conversation)
        if not spans or len(tokens) < 2:
            continue
        ids = mx.array(tokens)[None]
        logits = model(ids[:, :-1]).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, ids[:, 1:])[0]  # ce[j] scores token j+1
        mask = [0.0] * (len(tokens) - 1)
        for start, end in spans:
            for j in range(max(start, 1), end):
                mask[j - 1] = 1.0
        m = mx.array(mask)
        total += float((ce * m).sum())
        count += int(sum(mask))
    loss = total / count if count else float("nan")
    return {"loss": loss, "tokens": count, "perplexity": math.exp(loss) if count else float("nan")}


def _cross_entropy(stream: Any) -> Any:
    """Per-token cross-entropy whose backward reuses the forward's exponentials.

    `nn.losses.cross_entropy` runs logsumexp forward and a softmax again in the backward: two
    passes of `exp` over batch × tokens × vocab (255 × 49,152 at the benchmark's setting). MLX's
    CPU exp is scalar (~13 ns an element on x86), so each pass costs ~150 ms of a ~2 s step.
    Keeping exp(logits - max) from the forward makes the gradient (softmax - one-hot) one fused
    multiply-subtract instead. The backward runs on `stream` (engine.models.cpu_streams).
    """
    mx = import_mlx()

    @mx.custom_function
    def cross_entropy(logits: Any, targets: Any) -> Any:
        top = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
        exps = mx.exp(logits - top)
        total = exps.sum(axis=-1, keepdims=True)
        picked = mx.take_along_axis(logits, targets[..., None], axis=-1)
        return (mx.log(total) + top - picked)[..., 0], exps, total

    @cross_entropy.vjp
    def cross_entropy_vjp(primals: Any, cotangents: Any, outputs: Any) -> Any:
        logits, targets = primals
        with mx.stream(stream):
            scale = cotangents[0][..., None]
            exps, total = outputs[1], outputs[2]
            hot = mx.arange(logits.shape[-1]) == targets[..., None]
            return exps * (scale / total) - hot * scale, mx.zeros_like(targets)

    return cross_entropy


_CE: dict[Any, Any] = {}  # per stream


def cross_entropy(logits: Any, targets: Any) -> Any:
    """Cross-entropy of every position, shape `targets.shape`, in float32."""
    mx = import_mlx()
    return per_stream(_cross_entropy, _CE)(logits.astype(mx.float32), targets)[0]


def train_loss(model: Any, batch: Any, lengths: Any) -> tuple[Any, Any]:
    """Mean cross-entropy over each row's tokens from its offset (the completion) to its end.

    mlx-lm's default loss also counts the target one past the end (`steps <= length`): the
    padding token after every example. This one stops at the example's last token, as the packed
    loss does, so a packed and a plain step train on the same targets. Long rows are scored in
    two halves on two CPU streams while engine.models.cpu_streams is on."""
    mx = import_mlx()
    inputs, targets = batch[:, :-1], batch[:, 1:]
    steps = mx.arange(1, targets.shape[1] + 1)  # the position in the row of each target
    counted = mx.logical_and(steps >= lengths[:, 0:1], steps < lengths[:, 1:])

    def part_loss(start: int, end: int, cache: Any) -> Any:
        logits = model(inputs[:, start:end]) if cache is None else model(inputs[:, start:end], cache=cache)
        return (cross_entropy(logits, targets[:, start:end]) * counted[:, start:end]).sum()

    ntoks = counted.sum()
    return summed_over_halves(model, inputs.shape[1], part_loss) / ntoks, ntoks
