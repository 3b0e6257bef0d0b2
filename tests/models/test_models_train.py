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


# Training on four Q&As, validating on two others at a learning rate far too high for them: the
# tiny model's validation loss falls for a few steps, then rises as it memorises the training
# answers (measured: lowest at iteration 4, higher at 6, 8 and at the end).
OVERFIT = {
    **TRAIN,
    "iters": 16,
    "steps_per_eval": 2,
    "val_batches": -1,
    "learning_rate": 0.12,
}


def _overfit_data() -> tuple[list[dict], list[dict]]:
    return [chat(*qa, system=False) for qa in QA[:4]], [chat(*qa, system=False) for qa in QA[4:]]


def _val_loss_of(model_dir: Path, adapters: Path, valid: list[dict], cfg) -> float:  # noqa: ANN001
    """The validation loss of a published adapter, loaded the way mlx-lm users load it."""
    import mlx_lm
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import evaluate

    from engine.models.loss import train_loss  # the engine's loss: each example's own tokens only

    model, tokenizer = mlx_lm.load(str(model_dir), adapter_path=str(adapters))
    dataset = CacheDataset(ChatDataset(valid, tokenizer, mask_prompt=cfg.mask_prompt))
    return evaluate(
        model=model, dataset=dataset, batch_size=cfg.batch_size, num_batches=-1, max_seq_length=128, loss=train_loss
    )


def _weights(adapters: Path) -> dict:
    from engine.models.blas import import_mlx

    return import_mlx().load(str(adapters / "adapters.safetensors"))


def test_a_run_whose_validation_loss_rises_keeps_the_best_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.models.blas import import_mlx
    from engine.models.train import train_adapter

    mx = import_mlx()
    cfg = recipe_with({**OVERFIT, "model": str(tiny_llama)}, tmp_path).train
    train, valid = _overfit_data()
    result = train_adapter(tiny_llama, train, valid, cfg, tmp_path / "adapters", 0.12, 16)

    trained = [p for p in result.val if p["iteration"] > 0]
    best = min(trained, key=lambda p: p["loss"])
    assert result.val[-1]["iteration"] == 16 and result.final_val_loss > best["loss"], "the scenario: loss rises"
    assert best["iteration"] < 16
    assert (result.kept_iteration, result.kept_val_loss) == (best["iteration"], best["loss"])
    summary = result.summary()
    assert summary["kept_iteration"] == best["iteration"] and summary["final_iteration"] == 16
    assert summary["stopped_early"] is False
    # The published adapter loads in mlx-lm and scores exactly the kept loss, not the final one.
    reloaded = _val_loss_of(tiny_llama, tmp_path / "adapters", valid, cfg)
    assert reloaded == pytest.approx(best["loss"], rel=1e-5)
    assert abs(reloaded - result.final_val_loss) > 1e-3
    # Training the same way but stopping right at the kept iteration's evaluation gives the same
    # weights: the published file is that iteration's checkpoint, not a mix.
    stop_at = {**OVERFIT, "model": str(tiny_llama), "early_stopping": {"patience": 1}}
    first_rise = next(
        p["iteration"] for prev, p in zip(trained, trained[1:], strict=False) if p["loss"] >= prev["loss"]
    )
    early = train_adapter(tiny_llama, train, valid, recipe_with(stop_at, tmp_path).train, tmp_path / "early", 0.12, 16)
    assert early.trained_iters == first_rise
    # The curve's exact shape moves with float rounding (CPU kernels, BLAS), so the expectation is
    # read off it: the best evaluation up to the first rise, which the early run publishes.
    best_before_rise = min((p for p in trained if p["iteration"] <= first_rise), key=lambda p: p["loss"])
    assert early.kept_iteration == best_before_rise["iteration"]
    assert _val_loss_of(tiny_llama, tmp_path / "early", valid, cfg) == pytest.approx(best_before_rise["loss"], rel=1e-5)
    if best_before_rise["iteration"] == best["iteration"]:
        kept, published = _weights(tmp_path / "early"), _weights(tmp_path / "adapters")
        assert kept.keys() == published.keys()
        assert all(mx.array_equal(kept[k], published[k]).item() for k in kept)


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.models.train import train_adapter

    train, valid = _overfit_data()
    full = train_adapter(
        tiny_llama, train, valid, recipe_with({**OVERFIT, "model": str(tiny_llama)}, tmp_path).train,
        tmp_path / "full", 0.12, 16,
    )  # fmt: skip
    # Where patience 2 must stop, read off the uninterrupted run's curve.
    losses, lowest, stale, expected = [p for p in full.val if 0 < p["iteration"] < 16], None, 0, None
    for p in losses:
        lowest, stale = (p["loss"], 0) if lowest is None or p["loss"] < lowest else (lowest, stale + 1)
        if stale == 2:
            expected = p["iteration"]
            break
    assert expected is not None, "the scenario: two evaluations in a row without a new lowest loss"

    cfg = recipe_with({**OVERFIT, "model": str(tiny_llama), "early_stopping": {"patience": 2}}, tmp_path).train
    early = train_adapter(tiny_llama, train, valid, cfg, tmp_path / "early", 0.12, 16)
    assert early.stopped_early and early.trained_iters == expected
    assert early.val[-1]["iteration"] == expected  # no evaluation (and no step) after the stop
    assert [p["loss"] for p in early.val] == pytest.approx([p["loss"] for p in full.val[: len(early.val)]])
    assert max(p["iteration"] for p in early.train) <= expected
    best = min((p for p in early.val if p["iteration"] > 0), key=lambda p: p["loss"])
    assert early.kept_iteration == best["iteration"] < expected
    assert _val_loss_of(tiny_llama, tmp_path / "early", valid, cfg) == pytest.approx(best["loss"], rel=1e-5)


def test_train_step_records_the_kept_adapter_in_metrics_and_rows(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.steps import train as train_step

    recipe = recipe_with({**OVERFIT, "model": str(tiny_llama), "early_stopping": {"patience": 3}}, tmp_path)
    split = tmp_path / "split" / "data"
    split.mkdir(parents=True)
    train, valid = _overfit_data()
    for name, part in (("train", train), ("valid", valid)):
        (split / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    rows, ctx = run_step(train_step, recipe, tmp_path, {"split": tmp_path / "split"})
    m = ctx.metrics
    best = min((p for p in m["val_loss"] if p["iteration"] > 0), key=lambda p: p["loss"])
    assert (m["kept_iteration"], m["kept_val_loss"]) == (best["iteration"], best["loss"])
    assert m["final_val_loss"] == m["val_loss"][-1]["loss"] and m["final_iteration"] == m["val_loss"][-1]["iteration"]
    assert rows[-1]["kept_iteration"] == best["iteration"] and rows[-1]["kept_val_loss"] == best["loss"]


def test_without_a_validation_set_the_last_adapter_is_kept(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.models.train import train_adapter

    cfg = recipe_with({**TRAIN, "model": str(tiny_llama), "early_stopping": {"patience": 1}}, tmp_path).train
    train = [chat(*qa) for qa in QA]
    result = train_adapter(tiny_llama, train, train[:1], cfg, tmp_path / "adapters", 1e-3, 6)  # 1 < batch_size
    assert result.val == [] and not result.stopped_early
    assert (result.kept_iteration, result.kept_val_loss) == (6, None)
    assert (tmp_path / "adapters" / "adapters.safetensors").stat().st_size > 0


def test_early_stopping_patience_must_be_positive(tmp_path: Path) -> None:
    from engine.errors import RecipeInvalid

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RecipeInvalid, match="patience"):
        recipe_with({**TRAIN, "model": str(tmp_path), "early_stopping": {"patience": 0}}, tmp_path)


def test_every_evaluation_scores_the_same_validation_batches(tiny_llama: Path, tmp_path: Path) -> None:
    """With val_batches below the set's size mlx-lm draws a random sample per evaluation; the
    losses compared to keep the best adapter must come from the same batches each time."""
    from engine.models.train import train_adapter

    # Validation examples of very different lengths, so two different samples score differently.
    valid = [chat(q, (a + " ") * (1 + 3 * i), system=False) for i, (q, a) in enumerate(QA)]
    settings = {**TRAIN, "model": str(tiny_llama), "steps_per_eval": 1, "val_batches": 1, "iters": 6}
    cfg = recipe_with(settings, tmp_path).train
    # A learning rate so small that the weights do not move: every evaluation sees the same model.
    result = train_adapter(tiny_llama, [chat(*qa) for qa in QA], valid, cfg, tmp_path / "a", 1e-12, 6)
    losses = [p["loss"] for p in result.val]
    assert len(losses) == 7 and max(losses) - min(losses) < 1e-4
