"""export: fuse the trained adapter into the base (model/), write model.gguf and an Ollama Modelfile.

The fused folder is a plain HF layout (dequantized weights, tokenizer, chat template) that
mlx-lm and transformers load. The GGUF is written with the `gguf` package for llama-family
models; another architecture gets a 'skipped' row with the reason, the fused folder still stands.
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

from engine.recipe.section import Section
from engine.recipe.shared import render_system_prompt
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "export"
VERSION = 2  # 2: the recipe name written into the GGUF keys the step
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


def config(recipe: Recipe) -> Config:
    return Config(
        recipe.export,
        recipe.train.model,
        render_system_prompt(recipe.split.system_prompt, recipe.creator.name),
        recipe.name,
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
    from engine.models.fuse import fuse_to_folder
    from engine.models.gguf_export import export_gguf
    from engine.models.modelfile import modelfile
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
                    export_gguf(fused, gguf_path, export.gguf.type, name=cfg.name)
                rows.append(_row("gguf", gguf_path, started))
            except UnsupportedArchitecture as e:
                ctx.log.warning("%s", e)
                rows.append(_row("gguf", None, started, "skipped", str(e)))
        rows.append(_modelfile(ctx, export, fused, gguf_path, cfg.system, modelfile))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    ctx.metrics.update({r["artifact"]: {k: r[k] for k in ("status", "bytes", "seconds", "reason")} for r in rows})
    ctx.metrics["gguf_type"] = export.gguf.type
    return rows


def _modelfile(ctx: Any, export: Any, fused: Path, gguf_path: Path, system: str | None, render: Any) -> dict:
    started = time.perf_counter()
    if not export.modelfile:
        return _row("modelfile", None, started, "skipped", "export.modelfile is false")
    if not gguf_path.exists():
        return _row("modelfile", None, started, "skipped", "no model.gguf to point at")
    config_path = fused / "tokenizer_config.json"
    template = (
        json.loads(config_path.read_text(encoding="utf-8")).get("chat_template") if config_path.exists() else None
    )
    path = ctx.work_dir / "Modelfile"
    path.write_text(render(gguf_path.name, template, system), encoding="utf-8")
    return _row("modelfile", path, started)
