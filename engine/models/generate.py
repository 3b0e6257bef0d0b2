"""Batched chat generation with mlx-lm (`batch_generate`: ~3.6x single-stream throughput on CPU).

A PrefixCache lets prompts that start alike share their prefill: every pass over a video sends
the same system turn and transcript (~900 tokens in the demo) before a different instruction, so
the KV of that shared start is computed once and each later prompt only prefills its own tail.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

from engine.models.blas import import_mlx
from engine.models.cpu_attention import attending_on_cpu

# Prompt tokens prefilled per forward pass. On CPU, 256 keeps each pass's attention scores small
# enough to stay in cache and skips most of the causal half that one whole-prompt pass computes
# and then masks: a 1,700-token SmolLM2 prefill took 12 s instead of 30 s at mlx-lm's default of
# 2048 (with engine.models.cpu_attention; same run, busy machine). A GPU wants the big passes.
CPU_PREFILL_STEP = 256
GPU_PREFILL_STEP = 2048


def prefill_step() -> int:
    mx = import_mlx()
    return CPU_PREFILL_STEP if mx.default_device() == mx.cpu else GPU_PREFILL_STEP


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


class PrefixCache:
    """The KV caches of recent prompts, reused for later prompts that start with the same tokens.

    Kept per model (a cache is only valid for the weights that computed it). An entry is a
    prompt's token ids and its KV cache after prefill (the generated tokens trimmed off); a new
    prompt takes the entry with the longest common start, trimmed to that start, and prefills
    only the rest. Greedy tokens stay those of a full prefill (tests/llm/test_generation_speed.py).
    """

    MIN_SHARED = 64  # tokens in common before a reuse pays for copying the cache
    MAX_BYTES = 512 << 20  # ~12 demo prompts' KV (135M model, 900 tokens, float32); oldest go first

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.entries: list[tuple[list[int], list[Any]]] = []
        self.hits = 0
        self.reused_tokens = 0

    def clear(self) -> None:
        self.entries.clear()

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        """(a private copy of the best cache trimmed to the shared start, its length) or (None, 0).
        At least the prompt's last token is left to prefill: generation starts from its logits."""
        best, best_len = None, 0
        for known, cache in self.entries:
            shared = _common_length(known, tokens, len(tokens) - 1)
            if shared > best_len:
                best, best_len = cache, shared
        if best is None or best_len < self.MIN_SHARED:
            return None, 0
        from mlx_lm.models.cache import trim_prompt_cache

        mine = copy.deepcopy(best)
        trim_prompt_cache(mine, mine[0].offset - best_len)
        self.hits += 1
        self.reused_tokens += best_len
        return mine, best_len

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep `cache` (of `tokens` plus whatever was generated after them) for later prompts."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if not cache or not can_trim_prompt_cache(cache) or not hasattr(cache[0], "offset"):
            return  # sliding-window or state-space caches cannot be cut back to the prompt
        if cache[0].offset < len(tokens):
            return  # not the whole prompt (a stopped generation): nothing safe to keep
        trim_prompt_cache(cache, cache[0].offset - len(tokens))
        _materialize(cache)
        self.entries = [(t, c) for t, c in self.entries if t != tokens] + [(list(tokens), cache)]
        while len(self.entries) > 1 and sum(_nbytes(c) for _, c in self.entries) > self.max_bytes:
            self.entries.pop(0)


def _materialize(cache: list[Any]) -> None:
    """Compute the kept arrays now, on the thread that made them. MLX streams belong to a thread
    and the mlx provider generates in `asyncio.to_thread` workers: an array left lazy here would
    fail later, on another worker, with "There is no Stream(cpu, N) in current thread"."""
    import_mlx().eval([layer.state for layer in cache])


def _nbytes(cache: list[Any]) -> int:
    return sum(int(getattr(layer, "nbytes", 0)) for layer in cache)


def _common_length(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


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
    prefix_cache: PrefixCache | None = None,
) -> list[str]:
    """One reply per conversation, in order. Greedy at temperature 0; seeded otherwise.

    Setting `stop` (from another thread) ends it with GenerationStopped within one token.
    With `prefix_cache`, a prompt starting like an earlier one prefills only what differs."""
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
    with attending_on_cpu(model):
        for start in range(0, len(prompts), step):
            chunk = prompts[start : start + step]
            if prefix_cache is not None:
                replies.extend(_with_prefix_cache(model, tokenizer, chunk, max_tokens, prefix_cache, extra))
                continue
            out = batch_generate(
                model,
                tokenizer,
                chunk,
                max_tokens=max_tokens,
                prefill_batch_size=len(chunk),
                completion_batch_size=len(chunk),
                prefill_step_size=prefill_step(),
                **extra,
            )
            replies.extend(text.strip() for text in out.texts)
    return replies


def _batch_generator(model: Any, tokenizer: Any, rows: int, **extra: Any) -> Any:
    """mlx-lm's BatchGenerator for `rows` prompts at once, stopping at the tokenizer's EOS ids."""
    from mlx_lm.generate import BatchGenerator

    return BatchGenerator(
        model,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        prefill_batch_size=rows,
        completion_batch_size=rows,
        prefill_step_size=prefill_step(),
        **extra,
    )


def _with_prefix_cache(
    model: Any, tokenizer: Any, prompts: list[list[int]], max_tokens: int, cache: PrefixCache, extra: dict
) -> list[str]:
    """One batch whose prompts reuse the cached KV of their longest known start; their own KV
    (prompt part) is kept for the prompts after them. mlx-lm's BatchGenerator directly, since
    batch_generate cannot hand it the reused start's tokens (`all_tokens`): without them the
    repetition penalty would see a shorter history than on the plain path."""
    from mlx_lm.models.cache import make_prompt_cache

    found = [cache.lookup(p) for p in prompts]
    gen = _batch_generator(model, tokenizer, len(prompts), **extra)
    try:
        uids = gen.insert(
            [p[n:] for p, (_, n) in zip(prompts, found, strict=True)],
            [max_tokens] * len(prompts),
            caches=[c if c is not None else make_prompt_cache(model) for c, _ in found],
            all_tokens=[p[:n] for p, (_, n) in zip(prompts, found, strict=True)],
        )
        kept: dict[int, list[Any]] = {}
        tokens = _generated(gen, uids, on_finish=lambda r: kept.__setitem__(r.uid, r.prompt_cache))
    finally:
        gen.close()
    for prompt, uid in zip(prompts, uids, strict=True):
        if uid in kept:
            cache.store(prompt, kept[uid])
    return [tokenizer.decode(tokens[uid]).strip() for uid in uids]


@dataclass(frozen=True)
class GenerationRequest:
    """One conversation to answer, with its own limit and decoding."""

    conversation: list[dict]
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    repetition_penalty: float | None = None
    repetition_context_size: int = 20


def generate_each(
    model: Any,
    tokenizer: Any,
    requests: list[GenerationRequest],
    seed: int = 0,
    batch_size: int = 16,
    stop: threading.Event | None = None,
) -> list[str]:
    """One reply per request, in order, up to `batch_size` requests decoded together whatever
    their limits and decoding (mlx-lm's BatchGenerator takes a sampler and logits processors per
    sequence). On a CPU a decoding step costs about the same for 4 rows or 16 (it streams the
    weights once), so greedy and sampled answers, and long and short limits, share steps instead
    of taking turns. Greedy rows give the tokens chat_generate gives; each batch is seeded with
    `seed` + its index."""
    mx = import_mlx()
    replies: list[str] = []
    step = max(1, batch_size)
    with attending_on_cpu(model):
        for n, start in enumerate(range(0, len(requests), step)):
            mx.random.seed(seed + n)
            replies.extend(_generate_batch(model, tokenizer, requests[start : start + step], stop))
    return replies


def _generate_batch(
    model: Any, tokenizer: Any, requests: list[GenerationRequest], stop: threading.Event | None
) -> list[str]:
    decoding = [_sampling(r.temperature, r.repetition_penalty, r.repetition_context_size) for r in requests]
    stopper = [_stopper(stop)] if stop is not None else []
    gen = _batch_generator(model, tokenizer, len(requests))
    try:
        uids = gen.insert(
            [chat_prompt_tokens(tokenizer, r.conversation) for r in requests],
            [r.max_tokens for r in requests],
            samplers=[sampler for sampler, _ in decoding],  # None: greedy
            logits_processors=[[*(processors or []), *stopper] for _, processors in decoding],
        )
        tokens = _generated(gen, uids)
    finally:
        gen.close()
    return [tokenizer.decode(tokens[uid]).strip() for uid in uids]


def _generated(gen: Any, uids: list[int], on_finish: Any = None) -> dict[int, list[int]]:
    """Each sequence's new tokens, the stop token left out, once the generator has run dry;
    `on_finish` sees every sequence's last response (its prompt cache, its finish reason)."""
    tokens: dict[int, list[int]] = {uid: [] for uid in uids}
    while responses := gen.next_generated():
        for r in responses:
            if r.finish_reason is not None and on_finish is not None:
                on_finish(r)
            if r.finish_reason != "stop":
                tokens[r.uid].append(r.token)
    return tokens
