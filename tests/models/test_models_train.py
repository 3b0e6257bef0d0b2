"""Training on a tiny llama built in code: the real train step, real mlx-lm training, real files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.pipeline.recipes import parse_recipe
from engine.pipeline.store import Store
from engine.steps.base import RunOptions, StepContext

ROOT = Path(__file__).resolve().parents[2]
QA = [
    ("What is fasting?", "Fasting is a time when you do not eat, and insulin falls."),
    ("Is it bad to skip breakfast?", "No. Breakfast is not the most important meal for everyone."),
    ("Why do I get hungry?", "Hunger comes in waves and passes if you drink water or tea."),
    ("What does insulin do?", "Insulin is a hormone that tells the body to store energy."),
    ("How long should I fast?", "Start with 12 hours, then 16 hours, and sleep well."),
    ("Should I eat real food?", "Yes: eat real food, less often, and sleep well."),
]


def chat(q: str, a: str, system: bool = True) -> dict:
    messages = [{"role": "system", "content": "You are a helpful doctor."}] if system else []
    return {"messages": messages + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write_split(folder: Path, n_train: int = 12, n_valid: int = 4) -> Path:
    """What the split step writes: data/{train,valid}.jsonl in mlx-lm chat format."""
    data = folder / "data"
    data.mkdir(parents=True)
    rows = [chat(*QA[i % len(QA)]) for i in range(n_train + n_valid)]
    for name, part in (("train", rows[:n_train]), ("valid", rows[n_train:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return folder


def recipe_with(train: dict, tmp_path: Path):
    data = {
        "name": "t",
        "creator": {"name": "Dr. Test"},
        "sources": [{"type": "local", "path": str(ROOT / "recipes" / "demo")}],
        "train": train,
    }
    return parse_recipe(data, tmp_path)


def run_step(module, recipe, tmp_path: Path, upstream: dict[str, Path]) -> tuple[list[dict], StepContext]:
    with Store(tmp_path / "store.duckdb") as store:
        ctx = StepContext(
            base_dir=recipe.base_dir,
            step=module.NAME,
            key="k" * 16,
            store=store,
            work_dir=tmp_path / f"work-{module.NAME}",
            run_dir=tmp_path / "run",
            models_dir=tmp_path / "models",
            options=RunOptions(quiet=True),
            upstream_dirs=upstream,
        )
        rows = list(module.run(ctx, {}, module.config(recipe)))
    return rows, ctx


TRAIN = {
    "iters": 12,
    "batch_size": 2,
    "max_seq_length": 128,
    "steps_per_report": 2,
    "steps_per_eval": 4,
    "val_batches": 2,
    "lora": {"rank": 4, "layers": 2, "keys": ["self_attn.q_proj", "self_attn.v_proj"]},
}


def test_train_step_sweeps_then_writes_adapters_metrics_and_plot(tiny_llama: Path, tmp_path: Path) -> None:
    import mlx_lm

    from engine.steps import train as train_step

    recipe = recipe_with(
        {**TRAIN, "model": str(tiny_llama), "learning_rate": [1e-7, 3e-3], "sweep_fraction": 0.5}, tmp_path
    )
    rows, ctx = run_step(train_step, recipe, tmp_path, {"split": write_split(tmp_path / "split")})

    adapters = ctx.work_dir / "adapters"
    assert json.loads((adapters / "adapter_config.json").read_text())["lora_parameters"]["rank"] == 4
    model, _ = mlx_lm.load(str(tiny_llama), adapter_path=str(adapters))
    assert type(model.layers[-1].self_attn.q_proj).__name__ == "LoRALinear"
    assert (ctx.work_dir / "loss.png").stat().st_size > 1000

    m = ctx.metrics
    # The sweep: two 6-step trials; the tiny learning rate barely moves, so 3e-3 must win.
    trials = m["sweep"]["trials"]
    assert [t["learning_rate"] for t in trials] == [1e-7, 3e-3]
    assert m["sweep"]["trial_iters"] == 6
    assert trials[1]["final_val_loss"] < trials[0]["final_val_loss"]
    assert m["sweep"]["chosen"] == 3e-3 == m["learning_rate"]
    assert [r["run"] for r in rows] == ["trial-0", "trial-1", "final"]
    assert [r["chosen"] for r in rows] == [False, True, True]
    # The final run's curves: monotone iterations, finite losses, the numbers people look for.
    for curve in (m["train_loss"], m["val_loss"]):
        iterations = [p["iteration"] for p in curve]
        assert iterations == sorted(set(iterations)) and all(math.isfinite(p["loss"]) for p in curve)
    assert [p["iteration"] for p in m["train_loss"]] == [2, 4, 6, 8, 10, 12]
    assert m["val_loss"][-1]["iteration"] == 12
    assert m["train_loss"][-1]["loss"] < m["train_loss"][0]["loss"]
    assert m["best_val_loss"] == min(p["loss"] for p in m["val_loss"])
    assert m["tokens_per_second"] > 0 and m["trained_tokens"] > 0 and m["peak_memory_gb"] > 0
    assert m["wall_time_s"] > 0 and m["train_examples"] == 12 and m["valid_examples"] == 4


def test_cosine_warmup_dora_and_epochs(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.models.train import lr_schedule, total_iters, train_adapter

    recipe = recipe_with(
        {
            **TRAIN,
            "model": str(tiny_llama),
            "iters": None,
            "epochs": 2,
            "learning_rate": 1e-3,
            "steps_per_report": 1,
            "fine_tune_type": "dora",
            "grad_checkpoint": True,
            "lr_schedule": {"name": "cosine", "warmup": 2, "min_lr": 1e-5},
        },
        tmp_path,
    )
    cfg = recipe.train
    train = [chat(*qa) for qa in QA]
    iters = total_iters(cfg, len(train))
    assert iters == 6  # 2 epochs x 6 examples / batch 2
    result = train_adapter(tiny_llama, train, train[:2], cfg, tmp_path / "adapters", 1e-3, iters)
    # Linear warmup over 2 steps (5e-4, 1e-3), then cosine decay to min_lr over the other 4.
    schedule = lr_schedule(cfg, 1e-3, iters)
    used = [float(schedule(step)) for step in range(iters + 1)]
    assert used[:3] == pytest.approx([5e-4, 1e-3, 1e-3], rel=1e-4) and used[-1] == pytest.approx(1e-5)
    # Each train report carries the rate its step used: warmup and decay are visible in metrics.
    lrs = [p["learning_rate"] for p in result.train]
    assert lrs == pytest.approx(used[:iters], rel=1e-4)
    assert all(math.isfinite(p["loss"]) for p in result.train + result.val)
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "dora"


def test_train_step_rejects_batch_larger_than_data(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.errors import RecipeError
    from engine.steps import train as train_step

    recipe = recipe_with({**TRAIN, "model": str(tiny_llama), "batch_size": 8}, tmp_path)
    with pytest.raises(RecipeError, match="batch_size is 8"):
        run_step(train_step, recipe, tmp_path, {"split": write_split(tmp_path / "split", 4, 2)})


def test_lr_schedule_counts_optimizer_updates_with_grad_accumulation(tmp_path: Path) -> None:
    from engine.models.train import lr_schedule

    (tmp_path / "config.json").write_text("{}")  # `train.model` must name a model folder to validate
    recipe = recipe_with(
        {
            **TRAIN,
            "model": str(tmp_path),
            "learning_rate": 1e-3,
            "grad_accumulation": 4,
            "lr_schedule": {"name": "cosine", "warmup": 8, "min_lr": 0.0},
        },
        tmp_path,
    )
    schedule = lr_schedule(recipe.train, 1e-3, 40)  # 40 iterations = 10 updates: 2 warmup, 8 decay
    assert [float(schedule(s)) for s in (0, 1)] == pytest.approx([5e-4, 1e-3], rel=1e-4)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-9)
