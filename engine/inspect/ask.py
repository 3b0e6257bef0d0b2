"""`recipe ask RUN "question"`: answer with a run's tuned model, streaming tokens as they come.

Uses the fused model (runs/<id>/model/) when there is one, else the base model plus the run's
LoRA adapters. The system prompt is the one the model was trained with (from data/train.jsonl).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import RecipeError
from engine.recipe.shared import render_system_prompt


@dataclass(frozen=True)
class TunedModel:
    spec: str
    adapters: Path | None
    base_dir: Path | None
    kind: str  # fused | adapters


def _resolved(run_dir: Path) -> dict:
    path = run_dir / "resolved.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def find_tuned_model(run_dir: Path, prefer: str = "auto") -> TunedModel:
    """The fused folder, or base + adapters; `prefer` is auto | fused | adapters."""
    fused = run_dir / "model"
    adapters = run_dir / "adapters"
    if prefer in ("auto", "fused") and (fused / "config.json").is_file():
        return TunedModel(str(fused), None, None, "fused")
    if prefer in ("auto", "adapters") and (adapters / "adapter_config.json").is_file():
        base = (_resolved(run_dir).get("train") or {}).get("model")
        if not base:
            raise RecipeError(f"{run_dir}: adapters found but resolved.json names no train.model")
        manifest = run_dir / "manifest.json"
        recipe_path = (
            json.loads(manifest.read_text(encoding="utf-8")).get("recipe_path") if manifest.is_file() else None
        )
        return TunedModel(base, adapters, Path(recipe_path).resolve().parent if recipe_path else None, "adapters")
    missing = {"auto": "neither model/ nor adapters/", "fused": "no model/", "adapters": "no adapters/"}[prefer]
    raise RecipeError(
        f"{run_dir}: no tuned model ({missing} in the run folder); train it with `recipe run RECIPE` first"
    )


def system_prompt(run_dir: Path) -> str | None:
    """The system message of the training data, so the model is asked the way it was trained."""
    train = run_dir / "data" / "train.jsonl"
    if train.is_file():
        with open(train, encoding="utf-8") as f:
            first = f.readline()
        if first.strip():
            return next((m["content"] for m in json.loads(first)["messages"] if m["role"] == "system"), None)
    resolved = _resolved(run_dir)
    return render_system_prompt(
        (resolved.get("split") or {}).get("system_prompt"), (resolved.get("creator") or {}).get("name", "")
    )


def load_tuned(run_dir: Path, models_dir: Path, prefer: str = "auto") -> tuple[Any, Any, TunedModel]:
    from engine.models.resolve import load_model

    tuned = find_tuned_model(run_dir, prefer)
    model, tokenizer = load_model(tuned.spec, models_dir, tuned.base_dir, adapter_path=tuned.adapters)
    return model, tokenizer, tuned


def stream_answer(
    model: Any,
    tokenizer: Any,
    question: str,
    system: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    seed: int = 0,
    repetition_penalty: float | None = None,
    repetition_context_size: int = 20,
) -> Iterator[str]:
    """Yield text pieces of the answer as mlx-lm generates them."""
    from engine.models.blas import import_mlx

    mx = import_mlx()
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    mx.random.seed(seed)
    processors = (
        make_logits_processors(repetition_penalty=repetition_penalty, repetition_context_size=repetition_context_size)
        if repetition_penalty
        else None
    )
    for response in stream_generate(
        model,
        tokenizer,
        prompt,
        max_tokens=max_tokens,
        sampler=make_sampler(temp=temperature),
        logits_processors=processors,
    ):
        if response.text:
            yield response.text


def ask(
    run_dir: Path,
    question: str,
    models_dir: Path,
    prefer: str = "auto",
    max_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
) -> Iterator[str]:
    """Load the run's tuned model and stream its answer (eval settings as defaults)."""
    ev = _resolved(run_dir).get("eval") or {}
    model, tokenizer, _ = load_tuned(run_dir, models_dir, prefer)
    yield from stream_answer(
        model,
        tokenizer,
        question,
        system_prompt(run_dir),
        max_tokens or ev.get("max_tokens", 256),
        temperature,
        seed,
        ev.get("repetition_penalty"),
        ev.get("repetition_context_size", 20),  # the evaluation's main setting (older recipes: mlx-lm's 20)
    )
