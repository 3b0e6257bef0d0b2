"""Loss of a model on chat conversations, counted on the assistant tokens only."""

from __future__ import annotations

import math
from typing import Any

from engine.models.blas import import_mlx


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
