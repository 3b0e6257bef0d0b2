"""export: fuse the trained adapter into the base (model/), write model.gguf and an Ollama Modelfile.

The fused folder is a plain HF layout (dequantized weights, tokenizer, chat template) that
mlx-lm and transformers load. The GGUF is written with the `gguf` package for llama-family
models, with the base model's descriptive keys (license, ...) and the fine-tune's name; another
architecture gets a 'skipped' row with the reason, the fused folder still stands. The Modelfile's
template renders like the chat template, and its sampling defaults are the evaluation's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from engine.models.modelfile import Sampling
from engine.recipe.section import Section
from engine.recipe.shared import render_system_prompt
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "export"
# 2: the recipe name written into the GGUF keys the step
# 3: base model's general.* keys in the GGUF; Modelfile template from the chat template, eval sampling
VERSION = 3
DEPENDS = ("train",)
COLUMNS = {
    "artifact": "VARCHAR",
    "path": "VARCHAR",
    "bytes": "BIGINT",
    "seconds": "DOUBLE",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "artifact": "What was written: model (fused HF folder) | gguf | modelfile.",
    "path": "Where, relative to the run folder.",
    "bytes": "Its size in bytes.",
    "seconds": "Seconds it took to write.",
}


SECTION = "export"


class GGUF(Section):
    """GGUF for llama.cpp / Ollama (llama-family models)."""

    enabled: bool = Field(True, description="Write `model.gguf`.")
    type: Literal["f16", "q8_0", "f32"] = Field("q8_0", description="`f16` or `q8_0`.")


class ExportSettings(Section):
    """What the run folder gets after training."""

    fuse: bool = Field(
        True,
        description="Fuse the adapter into the base (dequantised) in `model/`, HF layout with "
        "tokenizer and chat template.",
    )
    gguf: GGUF = Field(default_factory=GGUF, description=GGUF.__doc__)
    modelfile: bool = Field(True, description="Write an Ollama `Modelfile` next to the GGUF.")


Settings = ExportSettings


@dataclass(frozen=True)
class Config:
    export: ExportSettings
    # The base model the adapter was trained on. Keyed by its identity (fingerprint), never by
    # the spec as written: a path is a location, and a copied project must keep its cache.
    model: str = field(compare=False)
    system: str | None  # the training system prompt, for the Modelfile
    name: str  # the recipe's name, written into the GGUF metadata
    sampling: Sampling  # the Modelfile's PARAMETER defaults


# mlx-lm's make_logits_processors applies repetition_penalty to the last 20 tokens by default, and
# evaluate leaves it there; Ollama's window (repeat_last_n) defaults to 64.
MLX_REPETITION_CONTEXT = 20


def ollama_sampling(recipe: Recipe) -> Sampling:
    """The Modelfile's sampling defaults: the evaluation's deterministic setting (temperature 0,
    the report's first column, the one probes and the judge use), so `ollama run` answers as the
    report shows. Top-k, top-p and min-p are off as in mlx-lm's sampler, so raising the temperature
    to the sampled setting's gives that setting too (Ollama's own defaults are 40, 0.9 and 0)."""
    ev = recipe.eval
    values: tuple[tuple[str, float | int], ...] = (
        ("temperature", 0),
        ("repeat_penalty", ev.repetition_penalty),
        ("repeat_last_n", MLX_REPETITION_CONTEXT),
        ("top_k", 0),
        ("top_p", 1),
        ("min_p", 0),
        ("seed", ev.seed),
        ("num_predict", ev.max_tokens),
    )
    source = (
        "Sampling as in the evaluation's deterministic setting (temperature 0, repetition penalty "
        f"{ev.repetition_penalty:g} over the last {MLX_REPETITION_CONTEXT} tokens, no top-k/top-p/min-p, "
        f"at most {ev.max_tokens} tokens)."
    )
    if ev.sampled and ev.temperature > 0:
        source += (
            f"\nIts sampled setting: PARAMETER temperature {ev.temperature:g} (seed {ev.seed}), "
            "or /set parameter temperature in `ollama run`."
        )
    return Sampling(values, source)


def config(recipe: Recipe) -> Config:
    return Config(
        recipe.export,
        recipe.train.model,
        render_system_prompt(recipe.split.system_prompt, recipe.creator.name),
        recipe.name,
        ollama_sampling(recipe),
    )


def fingerprint(ctx: StepContext, cfg: Config) -> Any:
    """The base model's identity (its files' content, or a hub id): a replaced local model or an
    upgraded package re-runs this step; moving it does not."""
    from engine.models.resolve import model_fingerprint

    return model_fingerprint(cfg.model, ctx.base_dir, ctx.item_cache("file_digests"))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _row(artifact: str, path: Path | None, started: float, status: str = "ok", reason: str | None = None) -> dict:
    return {
        "artifact": artifact,
        "path": path.name if path else None,
        "bytes": _size(path) if path and path.exists() else 0,
        "seconds": round(time.perf_counter() - started, 2),
        "status": status,
        "reason": reason,
    }


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    from engine.errors import UnsupportedArchitecture
    from engine.models.base_metadata import base_general, finetune_general
    from engine.models.fuse import fuse_to_folder
    from engine.models.gguf_export import export_gguf
    from engine.models.resolve import resolve_model_path

    export = cfg.export
    adapters = ctx.upstream_dir("train") / "adapters"
    base = resolve_model_path(cfg.model, ctx.models_dir, ctx.base_dir)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    tmp = None
    fused = ctx.work_dir / "model"
    if not export.fuse:  # the GGUF still needs a fused folder: build it outside the run folder
        tmp = tempfile.mkdtemp(prefix="fused-")
        fused = Path(tmp) / "model"
    try:
        started = time.perf_counter()
        if export.fuse or export.gguf.enabled:
            fuse_to_folder(Path(base), adapters, fused)
        rows.append(
            _row("model", fused, started)
            if export.fuse
            else _row("model", None, started, "skipped", "export.fuse is false")
        )
        gguf_path = ctx.work_dir / "model.gguf"
        started = time.perf_counter()
        if not export.gguf.enabled:
            rows.append(_row("gguf", None, started, "skipped", "export.gguf.enabled is false"))
        else:
            try:
                with ctx.progress(None, f"writing model.gguf ({export.gguf.type})"):
                    general = finetune_general(base_general(base), cfg.name)
                    export_gguf(fused, gguf_path, export.gguf.type, name=cfg.name, general=general)
                rows.append(_row("gguf", gguf_path, started))
            except UnsupportedArchitecture as e:
                ctx.log.warning("%s", e)
                rows.append(_row("gguf", None, started, "skipped", str(e)))
        rows.append(_modelfile(ctx, cfg, fused, gguf_path))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    ctx.metrics.update({r["artifact"]: {k: r[k] for k in ("status", "bytes", "seconds", "reason")} for r in rows})
    ctx.metrics["gguf_type"] = export.gguf.type
    return rows


def _modelfile(ctx: Any, cfg: Config, fused: Path, gguf_path: Path) -> dict:
    from engine.models.chat_format import derive
    from engine.models.modelfile import modelfile

    started = time.perf_counter()
    if not cfg.export.modelfile:
        return _row("modelfile", None, started, "skipped", "export.modelfile is false")
    if not gguf_path.exists():
        return _row("modelfile", None, started, "skipped", "no model.gguf to point at")
    template, tokens, adds_bos = _chat_template(fused)
    fmt = derive(template, tokens)
    if fmt is None:
        ctx.log.warning(
            "Modelfile: the chat template is not a format a Go TEMPLATE can reproduce; Ollama will use the GGUF's"
        )
    path = ctx.work_dir / "Modelfile"
    path.write_text(modelfile(gguf_path.name, fmt, cfg.system, cfg.sampling, adds_bos), encoding="utf-8")
    return _row("modelfile", path, started)


def _chat_template(fused: Path) -> tuple[str | None, dict[str, str], bool]:
    """(chat template, special tokens as the template sees them, whether the tokenizer adds BOS)."""
    path = fused / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    template = config.get("chat_template")
    tokens = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            tokens[key] = value
    return (template if isinstance(template, str) else None), tokens, bool(config.get("add_bos_token", False))
