"""The in-process llama.cpp provider: `llamacpp:<gguf>` models served to litellm by llama-cpp-python.

Optional (`pip install '.[llamacpp]'`; `make setup` does not install it): on a CPU, llama.cpp
decodes one stream of a small quantized GGUF faster than MLX decodes a batch
(benchmarks/local_generation.py, README's table), so machines that have it can point a recipe
at it. Like the `mlx:` provider it registers a litellm custom provider ("llamacpp") and reaches
the client through engine.llm.providers.

llama.cpp serves one sequence at a time per loaded model, so requests take turns (a lock);
llama-cpp-python keeps the KV of the previous prompt and evaluates only where a new prompt
departs from it, which is the prefix cache of a video's passes (same system turn and transcript)
for free when its requests come one after another.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import RecipeError
from engine.llm.providers import load_litellm, local_response, local_settings, register_provider

if TYPE_CHECKING:
    from engine.recipe.shared import LLMParams

PREFIX = "llamacpp:"  # in recipes: `model: llamacpp:<path.gguf or package:...gguf>`
PROVIDER = "llamacpp"  # the litellm custom provider name
# the same mild penalty as the mlx provider (engine.llm.mlx_provider), for the same loops
REPETITION_PENALTY = 1.1
CONTEXT_TOKENS = 8192  # llama.cpp allocates the KV for all of it up front: the model's own maximum may be 128k
INSTALL_HINT = "pip install 'llama-cpp-python>=0.3'  (or the project's extra: pip install '.[llamacpp]')"

_handler: Any = None
_models: dict[str, Any] = {}
_models_lock = threading.Lock()
_generate_lock = threading.Lock()  # one sequence at a time per process: a Llama is not thread-safe


def generation_settings() -> dict:
    """Decoding choices beyond the request's params (part of the cache key)."""
    return {"backend": "llama.cpp", "repetition_penalty": REPETITION_PENALTY}


def gguf_path(spec: str, models_dir: Path, base_dir: Path | None) -> Path:
    """The GGUF file of `spec` (a path, relative to the recipe's folder, or package:<module>/<file>.gguf),
    or a RecipeError saying what llama.cpp needs. Read as it is: no conversion into models_dir."""
    from engine.models.resolve import package_file

    where = package_file(spec) if spec.startswith("package:") else Path(spec).expanduser()
    if not where.is_absolute() and base_dir is not None and (base_dir / where).exists():
        where = base_dir / where
    if not where.is_file() or where.suffix.lower() != ".gguf":
        raise RecipeError(
            f"llm.model 'llamacpp:{spec}': llama.cpp reads one .gguf file, and {str(where)!r} is not one; "
            "name a .gguf path or package:<module>/<file>.gguf, or use mlx:<spec> for a model folder or hub id"
        )
    return where


def load(spec: str, models_dir: Path, base_dir: Path | None) -> Any:
    """The llama_cpp.Llama of a spec, loaded once per process."""
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise RecipeError(
            f"llm.model 'llamacpp:{spec}' needs llama-cpp-python, which is not installed: {INSTALL_HINT}"
        ) from e
    path = gguf_path(spec, models_dir, base_dir)
    with _models_lock:
        if str(path) not in _models:
            if not _models:
                atexit.register(_close_models)
            _models[str(path)] = Llama(
                str(path), n_ctx=CONTEXT_TOKENS, n_threads=os.cpu_count() or 1, n_batch=512, verbose=False
            )
        return _models[str(path)]


def _close_models() -> None:
    """Free the models before the interpreter tears llama_cpp down: freed later, in a finalizer,
    llama-cpp-python prints a TypeError traceback at exit."""
    with _models_lock:
        for llm in _models.values():
            llm.close()
        _models.clear()


def generate(
    spec: str, context: dict, messages: list[dict], max_tokens: int, temperature: float, seed: int = 0
) -> tuple[str, dict]:
    """One blocking chat completion: (text, token usage)."""
    llm = load(spec, context.get("models_dir") or Path("models"), context.get("base_dir"))
    with _generate_lock:
        out = llm.create_chat_completion(
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=1 if temperature <= 0 else 40,  # greedy at 0, as the mlx provider
            repeat_penalty=REPETITION_PENALTY,
            seed=seed,
        )
    text = str(out["choices"][0]["message"]["content"] or "").strip()
    usage = {k: int(out["usage"][k]) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return text, usage


def register(context: dict | None = None) -> Any:
    """Install the "llamacpp" provider into litellm (once) and point it at models_dir/base_dir."""
    global _handler
    if _handler is None:
        _handler = _make_handler()
    _handler.context.update(context or {})
    litellm = load_litellm()
    others = [p for p in litellm.custom_provider_map if p.get("provider") != PROVIDER]
    litellm.custom_provider_map = others + [{"provider": PROVIDER, "custom_handler": _handler}]
    return _handler


def _make_handler() -> Any:
    litellm = load_litellm()
    from litellm.llms.custom_llm import CustomLLM

    class LlamaCppHandler(CustomLLM):
        def __init__(self) -> None:
            super().__init__()
            self.context: dict = {}

        async def acompletion(
            self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kwargs: Any
        ) -> Any:
            max_tokens, temperature = local_settings(optional_params)
            text, usage = await asyncio.to_thread(generate, model, self.context, messages, max_tokens, temperature)
            return local_response(litellm, f"{PROVIDER}/{model}", text, usage)

        def completion(
            self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kwargs: Any
        ) -> Any:
            max_tokens, temperature = local_settings(optional_params)
            text, usage = generate(model, self.context, messages, max_tokens, temperature)
            return local_response(litellm, f"{PROVIDER}/{model}", text, usage)

    return LlamaCppHandler()


class LlamaCppProvider:
    """The engine.llm.providers.Provider of `llamacpp:<gguf>` models."""

    def litellm_model(self, model: str) -> str:
        return f"{PROVIDER}/{model[len(PREFIX) :]}"

    def cache_settings(self) -> dict:
        return generation_settings()

    def setup(self, context: dict) -> None:
        register(context)

    def call_kwargs(self, params: LLMParams) -> dict:
        return {}

    def deadline(self, params: LLMParams) -> float | None:
        # requests queue behind one another on the lock: a timeout would abandon work in line
        return None


register_provider(PREFIX, LlamaCppProvider())
