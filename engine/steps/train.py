"""train: LoRA/DoRA fine-tuning with mlx-lm on the split's train/valid sets; adapters + loss curve.

Reads `data/{train,valid}.jsonl` written by `split`, resolves `train.model` (GGUF imported once
into the models folder), optionally sweeps the learning rate, and trains. Every loss report lands
in metrics.json; `adapters/` (the snapshot with the lowest validation loss: `kept_iteration`) and
`loss.png` land in the run folder. One row per training run
(sweep trials and the final run), so the table shows which learning rate won and why.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from engine.data.jsonl import read_jsonl
from engine.data.plots import new_figure, save_png
from engine.errors import Problem, RecipeError
from engine.models.settings import TrainSettings
from engine.recipe.load import Located
from engine.steps.base import Inputs, Recipe, StepContext

MAX_SEED = 2**32 - 1  # numpy's global seed (mlx-lm's batch order) takes no larger one
MLX_PREFIX = "mlx:"  # an LLM served in-process from a local model (engine.llm.mlx_provider)

NAME = "train"
# 2: the lr schedule counts optimizer updates (grad_accumulation); 3: typed config;
# 4: adapters/ holds the lowest-validation-loss snapshot (kept_iteration), same batches each evaluation
# (train.distributed is not keyed and adds only metrics, so it needs no new version);
# 5: the loss counts each example's own tokens only (not the padding target after it), train.pack
VERSION = 5
DEPENDS = ("split",)
COLUMNS = {
    "run": "VARCHAR",
    "learning_rate": "DOUBLE",
    "iters": "INTEGER",
    "final_train_loss": "DOUBLE",
    "final_val_loss": "DOUBLE",
    "kept_iteration": "INTEGER",
    "kept_val_loss": "DOUBLE",
    "chosen": "BOOLEAN",
    "wall_time_s": "DOUBLE",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "run": "The training run: final, or a sweep trial.",
    "learning_rate": "Its learning rate.",
    "iters": "Its iterations.",
    "final_train_loss": "Training loss at the last report.",
    "final_val_loss": "Validation loss at the last evaluation.",
    "kept_iteration": "The iteration whose adapter was kept (the best validation loss).",
    "kept_val_loss": "The validation loss of the kept adapter.",
    "chosen": "True for the run whose adapter the run ships.",
    "wall_time_s": "Seconds it took.",
}


SECTION = "train"
Settings = TrainSettings
Config = TrainSettings  # the section is everything this step uses


def config(recipe: Recipe) -> TrainSettings:
    return recipe.train


def check(recipe: Recipe, located: Located) -> list[Problem]:
    """The step budget, and every local model the recipe names: `train.model` and any `mlx:` LLM.

    Checked at load time (validate, plan, and run before any step), so a mistyped model path
    never surfaces at train, after the LLM steps have spent money.
    """
    return (
        _budget_problems(recipe.train, located)
        + _distributed_problems(recipe, located)
        + [
            located.problem(path, f"{spec!r}: {why}")
            for path, spec in _local_models(recipe)
            if (why := _why_missing(spec, recipe.base_dir))
        ]
    )


def _budget_problems(train: TrainSettings, located: Located) -> list[Problem]:
    problems = []
    if train.seed > MAX_SEED:
        problems.append(
            located.problem(("train", "seed"), f"{train.seed} is more than {MAX_SEED} (numpy's largest seed)")
        )
    if train.iters is None and train.epochs is None:
        problems.append(located.problem(("train", "iters"), "set `iters` or `epochs` (both are null)"))
    schedule = train.lr_schedule
    if schedule.name == "cosine" and train.iters and schedule.warmup >= train.iters:
        message = f"warmup ({schedule.warmup}) must be below iters ({train.iters})"
        problems.append(located.problem(("train", "lr_schedule", "warmup"), message))
    return problems


def _distributed_problems(recipe: Recipe, located: Located) -> list[Problem]:
    from engine.models.distributed import settings_problems

    return [located.problem(path, message) for path, message in settings_problems(recipe.train, recipe.base_dir)]


def _why_missing(spec: str, base_dir: Path) -> str | None:
    from engine.models.resolve import why_missing

    return why_missing(spec, base_dir)


def _local_models(recipe: Recipe) -> list[tuple[tuple[str, ...], str]]:
    """(path in the recipe, model spec) of train.model and of every `mlx:` model in `llm`."""
    found: list[tuple[tuple[str, ...], str]] = [(("train", "model"), recipe.train.model)]
    llm = recipe.llm
    if llm.model.startswith(MLX_PREFIX):
        found.append((("llm", "model"), llm.model.removeprefix(MLX_PREFIX)))
    for name in type(llm.passes).model_fields:
        override = getattr(llm.passes, name)
        if override is not None and (override.model or "").startswith(MLX_PREFIX):
            found.append((("llm", "passes", name, "model"), override.model.removeprefix(MLX_PREFIX)))
    return found


def fingerprint(ctx: StepContext, cfg: TrainSettings) -> Any:
    """The base model's identity, which keys this step in place of the spec as written
    (TrainSettings.UNKEYED): its files' content for a local folder, GGUF or packaged model, its
    name for a hub id. A replaced model or an upgraded package re-runs training; a moved one not."""
    from engine.models.resolve import model_fingerprint

    return model_fingerprint(cfg.model, ctx.base_dir, ctx.item_cache("file_digests"))


def run(ctx: StepContext, inputs: Inputs, cfg: TrainSettings) -> list[dict]:
    from engine.models.resolve import resolve_model_path
    from engine.models.sweep import sweep
    from engine.models.train import total_iters, train_adapter

    data = ctx.upstream_dir("split") / "data"
    train, valid = read_jsonl(data / "train.jsonl"), read_jsonl(data / "valid.jsonl")
    if not train:
        raise RecipeError(f"train: no training examples in {data / 'train.jsonl'}; check the split step")
    model_path = resolve_model_path(cfg.model, ctx.models_dir, ctx.base_dir)
    iters = total_iters(cfg, len(train))
    started = time.perf_counter()
    rows: list[dict] = []
    log_file = ctx.work_dir / "train_log.txt"
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    ranks: dict[str, Any] = {}
    launch = _launcher(ctx, cfg, model_path, data, ranks) if cfg.distributed else None
    # mlx-lm's trainer prints its own table; it goes to a log file, our progress bar stays clean.
    with open(log_file, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        lr, sweep_summary = cfg.learning_rates[0], None
        if len(cfg.learning_rates) > 1:
            trial_iters = max(1, round(iters * cfg.sweep_fraction))
            with ctx.progress(len(cfg.learning_rates), f"learning-rate sweep ({trial_iters} steps each)") as bar:
                found = sweep(model_path, train, valid, cfg, iters, lambda _t: bar.advance(), launch)
            lr, sweep_summary = found.chosen, found.summary(cfg.sweep_fraction)
            rows += [_row(f"trial-{i}", t, t.learning_rate == lr) for i, t in enumerate(found.trials)]
            ctx.log.info("learning-rate sweep chose %g", lr)
        with ctx.progress(iters, f"training {iters} steps at lr {lr:g}") as bar:
            last = [0]

            def advance(report: dict) -> None:
                bar.advance(report["iteration"] - last[0])
                last[0] = report["iteration"]

            if launch:
                result = launch(ctx.work_dir / "adapters", lr, iters, advance)
            else:
                result = train_adapter(
                    model_path, train, valid, cfg, ctx.work_dir / "adapters", lr, iters, on_report=advance
                )
    rows.append(_row("final", result, True))
    _log_kept(ctx, cfg, result, len(valid))
    summary = result.summary()
    ctx.metrics.update(
        {
            "model": cfg.model,
            "model_path": str(model_path),
            "train_examples": len(train),
            "valid_examples": len(valid),
            **summary,
            "wall_time_s": round(time.perf_counter() - started, 2),
            "distributed": _distributed_metrics(cfg, ranks.get("last", [])),
            "device": _device(ctx),
        }
    )
    if sweep_summary:
        ctx.metrics["sweep"] = sweep_summary
    plot_losses(summary, sweep_summary, ctx.work_dir / "loss.png")
    return rows


def _launcher(ctx: StepContext, cfg: TrainSettings, model_path: Path | str, data: Path, ranks: dict[str, Any]) -> Any:
    """`launch(adapter_dir, lr, iters, on_report=None)`: one training under mlx.launch.

    Each launch gets its own folder of rank logs under the step's work folder (kept with the
    artifacts: `distributed/<adapters|trial-N>/rank<N>.log`); `ranks["last"]` holds the last
    launch's per-rank summaries for metrics.json.
    """
    from engine.models.distributed import train_distributed

    assert cfg.distributed is not None
    dist = cfg.distributed

    def launch(adapter_dir: Path, lr: float, iters: int, on_report: Any = None) -> Any:
        spec = {
            "model_path": str(model_path),
            "train_path": str(data / "train.jsonl"),
            "valid_path": str(data / "valid.jsonl"),
            "settings": cfg.model_dump(mode="json"),
            "learning_rate": lr,
            "iters": iters,
        }
        job_dir = ctx.work_dir / "distributed" / adapter_dir.name
        result, ranks["last"] = train_distributed(dist, ctx.base_dir, job_dir, spec, adapter_dir, on_report)
        return result

    return launch


def _distributed_metrics(cfg: TrainSettings, ranks: list[dict]) -> dict[str, Any]:
    """World size, backend and each rank's throughput (one process: world size 1, no backend)."""
    if cfg.distributed is None:
        return {"world_size": 1, "backend": None, "ranks": []}
    return {"world_size": len(ranks), "backend": cfg.distributed.backend, "ranks": ranks}


def _device(ctx: StepContext) -> dict[str, Any]:
    from engine.models.device import device_report

    report = device_report()
    if report.get("warning"):
        ctx.log.warning("%s", report["warning"])
    return report


def _log_kept(ctx: StepContext, cfg: TrainSettings, result: Any, n_valid: int) -> None:
    """Say which adapter was kept, and why early stopping did nothing when it could not run."""
    if cfg.early_stopping and n_valid < cfg.batch_size:
        ctx.log.warning(
            "train.early_stopping is set but the validation set has %d examples (fewer than batch_size=%d): "
            "no evaluations, so every step ran and the last adapter is kept; raise split.valid",
            n_valid,
            cfg.batch_size,
        )
    if result.kept_val_loss is not None:
        stopped = f", stopped early at iteration {result.trained_iters}" if result.stopped_early else ""
        ctx.log.info(
            "kept the adapter of iteration %d (validation loss %.4g; final %.4g%s)",
            result.kept_iteration,
            result.kept_val_loss,
            result.final_val_loss,
            stopped,
        )


def _row(name: str, result: Any, chosen: bool) -> dict:
    s = result.summary()
    finite = all(math.isfinite(r["loss"]) for r in result.train + result.val)
    return {
        "run": name,
        "learning_rate": result.learning_rate,
        "iters": result.iters,
        "final_train_loss": s["final_train_loss"],
        "final_val_loss": s["final_val_loss"],
        "kept_iteration": s["kept_iteration"],
        "kept_val_loss": s["kept_val_loss"],
        "chosen": chosen,
        "wall_time_s": round(result.wall_time_s, 2),
        "status": "ok" if finite else "failed",
        "reason": None if finite else "non-finite loss",
    }


def plot_losses(summary: dict, sweep_summary: dict | None, path: Path) -> None:
    """loss.png: the final run's train/val curves, plus each sweep trial's validation curve."""
    fig, ax = new_figure(7, 4)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        points = summary[key]
        ax.plot([p["iteration"] for p in points], [p["loss"] for p in points], marker="o", label=label)
    for trial in (sweep_summary or {}).get("trials", []):
        points = trial["val_loss"]
        ax.plot(
            [p["iteration"] for p in points],
            [p["loss"] for p in points],
            linestyle="--",
            alpha=0.6,
            label=f"sweep lr {trial['learning_rate']:g} (val)",
        )
    if summary.get("kept_val_loss") is not None:
        ax.axvline(
            summary["kept_iteration"],
            color="grey",
            linestyle=":",
            label=f"kept (iteration {summary['kept_iteration']})",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"LoRA training (lr {summary['learning_rate']:g})")
    ax.legend()
    save_png(fig, path)
