"""The in-process local provider: `mlx:<spec>` models served to litellm by mlx-lm generation.

Registered as the litellm custom provider "mlx", so the LLM client treats a local model like
any API; it reaches this module through engine.llm.providers (PLUGINS imports it on first use of
an `mlx:` model, and the import registers MlxProvider). Generation is CPU/GPU bound and batched
generation is far faster than one prompt at a time (FACTS: 8 prompts batched ~ 3.6x throughput),
so concurrent requests are gathered into micro-batches: the first request waits a few
milliseconds for company, and requests that
arrive while a batch is generating form the next one.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.llm.providers import load_litellm, local_response, local_settings, register_provider

if TYPE_CHECKING:
    from engine.recipe.shared import LLMParams

PREFIX = "mlx:"  # in recipes: `model: mlx:<spec>`
PROVIDER = "mlx"  # the litellm custom provider name: `mlx/<spec>`
# Most requests generated together; llm.max_concurrency is what bounds a batch in practice. On a
# CPU, decoding streams the float32 weights from memory once per step whatever the batch, so more
# rows a step cost little more (90 MLP matmuls of SmolLM2: 148 ms at 6 rows, 230 ms at 32).
BATCH_SIZE = 32
WINDOW = 0.02  # seconds the first request of a batch waits for others to join
# Small local models (the demo's 135M) fall into loops ("No, no, no, ...") until max_tokens;
# a mild penalty over mlx-lm's recent-token window breaks most loops without hurting JSON.
REPETITION_PENALTY = 1.1

_handler: Any = None
_generate_lock = threading.Lock()  # one generation at a time: the model is shared
_models: dict[tuple[str, str], tuple[Any, Any]] = {}
_models_lock = threading.Lock()
# per loaded model: the KV of recent prompts, so a video's later requests (the answers after its
# questions, the follow-ups) prefill only what follows the shared system turn and transcript
_prefix_caches: dict[tuple[str, str], Any] = {}


def generation_settings() -> dict:
    """Decoding choices of this provider beyond the request's params (part of the cache key)."""
    return {"repetition_penalty": REPETITION_PENALTY}


def register(context: dict | None = None) -> Any:
    """Install the "mlx" provider into litellm (once) and point it at models_dir/base_dir."""
    global _handler
    if _handler is None:
        _handler = _make_handler()
    _handler.context.update(context or {})
    litellm = load_litellm()
    others = [p for p in litellm.custom_provider_map if p.get("provider") != PROVIDER]
    litellm.custom_provider_map = others + [{"provider": PROVIDER, "custom_handler": _handler}]
    return _handler


def load(spec: str, models_dir: Path, base_dir: Path | None) -> tuple[Any, Any]:
    """The (model, tokenizer) of a spec, loaded once per process."""
    key = (spec, str(models_dir))
    with _models_lock:
        if key not in _models:
            from engine.models.resolve import load_model

            _models[key] = load_model(spec, Path(models_dir), base_dir)
        return _models[key]


def generate(
    spec: str,
    context: dict,
    conversations: list[list[dict]],
    max_tokens: int,
    temperature: float,
    stop: threading.Event | None = None,
) -> tuple[list[str], list[dict]]:
    """Blocking batched generation; returns texts and per-conversation token usage."""
    from engine.models.generate import PrefixCache, chat_generate

    models_dir = context.get("models_dir") or Path("models")
    model, tokenizer = load(spec, models_dir, context.get("base_dir"))
    with _generate_lock:
        prefix_cache = _prefix_caches.setdefault((spec, str(models_dir)), PrefixCache())
        texts = chat_generate(
            model,
            tokenizer,
            conversations,
            max_tokens=max_tokens,
            temperature=temperature,
            repetition_penalty=REPETITION_PENALTY,
            batch_size=BATCH_SIZE,
            stop=stop,
            prefix_cache=prefix_cache,
        )
    usages = []
    for conv, text in zip(conversations, texts, strict=True):
        prompt = sum(len(tokenizer.encode(str(m.get("content", "")))) for m in conv)
        completion = len(tokenizer.encode(text))
        usages.append({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    return texts, usages


class MicroBatcher:
    """Collects concurrent requests with the same settings on one event loop into batches."""

    def __init__(self, spec: str, context: dict, max_tokens: int, temperature: float):
        self.spec, self.context = spec, context
        self.max_tokens, self.temperature = max_tokens, temperature
        self.pending: list[tuple[list[dict], asyncio.Future]] = []
        self.worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []

    async def submit(self, messages: list[dict]) -> tuple[str, dict]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((messages, future))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(WINDOW)
        while self.pending:
            batch, self.pending = self.pending[:BATCH_SIZE], self.pending[BATCH_SIZE:]
            batch = [(m, f) for m, f in batch if not f.done()]  # skip callers that gave up
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            stop = threading.Event()
            try:
                texts, usages = await asyncio.to_thread(
                    generate, self.spec, self.context, [m for m, _ in batch], self.max_tokens, self.temperature, stop
                )
            except asyncio.CancelledError:
                # the run is stopping (Ctrl-C): end the generating thread at its next token
                # instead of letting the loop's shutdown wait for the whole batch
                stop.set()
                raise
            except Exception as e:  # noqa: BLE001 - every waiting caller gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), text, usage in zip(batch, texts, usages, strict=True):
                if not future.done():
                    future.set_result((text, usage))


def _make_handler() -> Any:
    litellm = load_litellm()
    from litellm.llms.custom_llm import CustomLLM

    class MlxHandler(CustomLLM):
        def __init__(self) -> None:
            super().__init__()
            self.context: dict = {}
            self.batchers: dict[tuple, MicroBatcher] = {}

        def batcher(self, spec: str, max_tokens: int, temperature: float) -> MicroBatcher:
            # one batcher per event loop: run_many starts a fresh loop each time
            key = (id(asyncio.get_running_loop()), spec, max_tokens, temperature)
            if key not in self.batchers:
                self.batchers = {k: v for k, v in self.batchers.items() if k[0] == key[0]}
                self.batchers[key] = MicroBatcher(spec, self.context, max_tokens, temperature)
            return self.batchers[key]

        async def acompletion(
            self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kwargs: Any
        ) -> Any:
            max_tokens, temperature = local_settings(optional_params)
            text, usage = await self.batcher(model, max_tokens, temperature).submit(messages)
            return local_response(litellm, f"{PROVIDER}/{model}", text, usage)

        def completion(
            self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kwargs: Any
        ) -> Any:
            max_tokens, temperature = local_settings(optional_params)
            texts, usages = generate(model, self.context, [messages], max_tokens, temperature)
            return local_response(litellm, f"{PROVIDER}/{model}", texts[0], usages[0])

    return MlxHandler()


class MlxProvider:
    """The engine.llm.providers.Provider of `mlx:<spec>` models."""

    def litellm_model(self, model: str) -> str:
        return f"{PROVIDER}/{model[len(PREFIX) :]}"

    def cache_settings(self) -> dict:
        return generation_settings()  # local decoding choices change replies too

    def warm_up(self, model: str, context: dict) -> None:
        """Loads the model (converting a GGUF the first time, ~4 s) on a thread while the client
        imports litellm (~3-5 s): the demo's first LLM step waited for one, then the other."""
        spec, models_dir = model[len(PREFIX) :], context.get("models_dir") or Path("models")
        if (spec, str(models_dir)) in _models:
            return

        def load_quietly() -> None:
            try:
                load(spec, models_dir, context.get("base_dir"))
            except Exception:  # noqa: BLE001 - the first call loads again and reports the error
                return

        threading.Thread(target=load_quietly, name="recipe-model-warm-up", daemon=True).start()

    def setup(self, context: dict) -> None:
        register(context)

    def call_kwargs(self, params: LLMParams) -> dict:
        return {}

    def deadline(self, params: LLMParams) -> float | None:
        # Local generation waits its turn in a batch and cannot be abandoned mid-way (the
        # thread keeps computing), so a timeout would only waste work: none applies.
        return None


register_provider(PREFIX, MlxProvider())
