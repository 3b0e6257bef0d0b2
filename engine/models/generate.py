"""Batched chat generation with mlx-lm (`batch_generate`: ~3.6x single-stream throughput on CPU)."""

from __future__ import annotations

import threading
from typing import Any

from engine.models.blas import import_mlx


class GenerationStopped(Exception):
    """Raised inside a generation whose `stop` event was set (the run is being interrupted)."""


def _stopper(stop: threading.Event) -> Any:
    """A logits processor that ends the generation at its next token once `stop` is set: mlx-lm
    runs a batch to the end otherwise, and Ctrl-C would wait for it."""

    def check(tokens: Any, logits: Any) -> Any:
        if stop.is_set():
            raise GenerationStopped("generation stopped")
        return logits

    return check


def chat_prompt_tokens(tokenizer: Any, conversation: list[dict]) -> list[int]:
    """Token ids of `conversation` with the chat template and the assistant turn opened."""
    return list(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True))


def _sampling(temperature: float, repetition_penalty: float | None, context_size: int) -> tuple[Any, Any]:
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    sampler = make_sampler(temp=temperature) if temperature > 0 else None  # None = greedy
    processors = (
        make_logits_processors(repetition_penalty=repetition_penalty, repetition_context_size=context_size)
        if repetition_penalty
        else None
    )
    return sampler, processors


def chat_generate(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict]],
    max_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    repetition_penalty: float | None = None,
    repetition_context_size: int = 20,
    batch_size: int = 8,
    stop: threading.Event | None = None,
) -> list[str]:
    """One reply per conversation, in order. Greedy at temperature 0; seeded otherwise.

    Setting `stop` (from another thread) ends it with GenerationStopped within one token."""
    mx = import_mlx()
    from mlx_lm.generate import batch_generate

    if not conversations:
        return []
    mx.random.seed(seed)
    sampler, processors = _sampling(temperature, repetition_penalty, repetition_context_size)
    extra: dict[str, Any] = {}
    if sampler is not None:
        extra["sampler"] = sampler
    if stop is not None:
        processors = [*(processors or []), _stopper(stop)]
    if processors:
        extra["logits_processors"] = processors
    prompts = [chat_prompt_tokens(tokenizer, c) for c in conversations]
    replies: list[str] = []
    step = max(1, batch_size)
    for start in range(0, len(prompts), step):
        chunk = prompts[start : start + step]
        out = batch_generate(
            model,
            tokenizer,
            chunk,
            max_tokens=max_tokens,
            prefill_batch_size=len(chunk),
            completion_batch_size=len(chunk),
            **extra,
        )
        replies.extend(text.strip() for text in out.texts)
    return replies
