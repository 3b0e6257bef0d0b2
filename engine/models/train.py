"""One LoRA/DoRA training run through `mlx_lm.tuner`, with every report captured.

`mlx_lm.lora.run` drops the callback it is given (FACTS.md), so this calls `tuner.train`
directly with a TrainingCallback that records the train/validation loss reports. At each
validation report the callback snapshots the adapter weights if that loss is the lowest yet;
the published adapters.safetensors is that snapshot, not the last step's weights (on the demo
validation loss bottoms out before the last step). Optional early stopping ends the loop when
`patience` evaluations in a row bring no new lowest loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import RecipeError, StopTraining
from engine.models.blas import import_mlx, keeping_freed_buffers
from engine.models.settings import TrainSettings as Train


@dataclass
class TrainResult:
    learning_rate: float
    iters: int
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    trainable_parameters: int = 0
    kept_iteration: int | None = None  # the published adapter's iteration (lowest validation loss)
    kept_val_loss: float | None = None
    trained_iters: int = 0  # steps actually taken: `iters`, or fewer after an early stop
    stopped_early: bool = False
    rank_tokens: int = 0  # tokens this rank trained on (all of them in a one-process run)
    world_size: int = 1

    @property
    def final_val_loss(self) -> float | None:
        return self.val[-1]["loss"] if self.val else None

    def summary(self) -> dict[str, Any]:
        """The metrics.json shape: curves plus the numbers people look for first."""
        best = min(self.val, key=lambda r: r["loss"]) if self.val else None
        tps = [r["tokens_per_second"] for r in self.train]
        return {
            "learning_rate": self.learning_rate,
            "iters": self.iters,
            "train_loss": self.train,
            "val_loss": self.val,
            "final_train_loss": self.train[-1]["loss"] if self.train else None,
            "final_val_loss": self.final_val_loss,
            "best_val_loss": best["loss"] if best else None,
            "best_val_iteration": best["iteration"] if best else None,
            "kept_iteration": self.kept_iteration,
            "kept_val_loss": self.kept_val_loss,
            "final_iteration": self.trained_iters,
            "stopped_early": self.stopped_early,
            "tokens_per_second": sum(tps) / len(tps) if tps else None,
            "trained_tokens": self.train[-1]["trained_tokens"] if self.train else 0,
            "peak_memory_gb": max((r["peak_memory_gb"] for r in self.train), default=None),
            "wall_time_s": round(self.wall_time_s, 2),
            "trainable_parameters": self.trainable_parameters,
        }


def total_iters(cfg: Train, n_train: int) -> int:
    """`iters`, or the steps `epochs` passes over the training set take."""
    if cfg.iters is not None:
        return cfg.iters
    epochs = cfg.epochs or 1.0
    return max(1, math.ceil(epochs * n_train / cfg.batch_size))


def lr_schedule(cfg: Train, learning_rate: float, iters: int) -> Any:
    """Constant or cosine decay to min_lr, after an optional linear warmup.

    The optimizer's step counts updates, not iterations: with grad_accumulation N mlx-lm updates
    once every N iterations, so `iters` and the warmup (both in iterations) are divided by N.
    """
    mx = import_mlx()
    import mlx.optimizers as optim

    updates = max(1, iters // cfg.grad_accumulation)
    warmup = min(math.ceil(cfg.lr_schedule.warmup / cfg.grad_accumulation), updates - 1)
    if cfg.lr_schedule.name == "cosine":
        main = optim.cosine_decay(learning_rate, max(updates - warmup, 1), cfg.lr_schedule.min_lr)
    else:
        if not warmup:
            return learning_rate
        main = lambda step: mx.array(learning_rate, dtype=mx.float32)  # noqa: E731 - any step -> lr
    if not warmup:
        return main
    # Step s of the warmup uses lr*(s+1)/warmup: no wasted zero-lr first step.
    ramp = lambda step: learning_rate * (step + 1) / warmup  # noqa: E731
    return optim.join_schedules([ramp, main], [warmup])


def adapter_config(cfg: Train, learning_rate: float, iters: int) -> dict[str, Any]:
    """What mlx-lm's load_adapters reads back (num_layers, lora_parameters, fine_tune_type)."""
    return {
        "fine_tune_type": cfg.fine_tune_type,
        "num_layers": cfg.lora.layers,
        "lora_parameters": {
            "rank": cfg.lora.rank,
            "scale": cfg.lora.scale,
            "dropout": cfg.lora.dropout,
            "keys": list(cfg.lora.keys) if cfg.lora.keys else None,
        },
        "learning_rate": learning_rate,
        "iters": iters,
        "batch_size": cfg.batch_size,
        "max_seq_length": cfg.max_seq_length,
        "mask_prompt": cfg.mask_prompt,
        "seed": cfg.seed,
    }


class KeepBest:
    """The trainable weights at the lowest validation loss so far, and the early-stopping count.

    mlx arrays are immutable and every optimizer update makes new ones, so holding the
    arrays of a snapshot keeps those exact values without a copy.
    """

    def __init__(self, model: Any, patience: int | None):
        self.model, self.patience = model, patience
        self.weights: dict[str, Any] | None = None
        self.iteration: int | None = None
        self.loss: float | None = None
        self.stale = 0  # evaluations since the last new lowest loss

    def offer(self, iteration: int, loss: float) -> None:
        # Iteration 0 is the untrained adapter (LoRA starts as the identity): the base model
        # itself. Keeping it would publish an adapter that does nothing; the evaluate step's
        # verdict says so instead when training did not beat the base.
        if iteration == 0:
            return
        if math.isfinite(loss) and (self.loss is None or loss < self.loss):
            from mlx.utils import tree_flatten

            self.weights = dict(tree_flatten(self.model.trainable_parameters()))
            self.iteration, self.loss, self.stale = iteration, loss, 0
        else:
            self.stale += 1

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience


def _callback(result: TrainResult, keep: KeepBest, on_report: Callable[[dict], None] | None) -> Any:
    from mlx_lm.tuner.callbacks import TrainingCallback

    class Capture(TrainingCallback):
        def on_train_loss_report(self, info: dict) -> None:
            row = {
                "iteration": int(info["iteration"]),
                "loss": float(info["train_loss"]),
                "learning_rate": float(info["learning_rate"]),
                "tokens_per_second": float(info["tokens_per_second"]),
                "trained_tokens": int(info["trained_tokens"]),
                "peak_memory_gb": float(info["peak_memory"]),
            }
            result.train.append(row)
            if on_report:
                on_report(row)

        def on_val_loss_report(self, info: dict) -> None:
            # mlx-lm evaluates before step `it` and reports it - 1: the weights after that many steps.
            iteration, loss = int(info["iteration"]), float(info["val_loss"])
            result.val.append({"iteration": iteration, "loss": loss, "time_s": float(info["val_time"])})
            keep.offer(iteration, loss)
            if keep.should_stop:
                raise StopTraining(iteration)

    return Capture()


def same_batches_each_evaluation(
    seed: int, counted: TrainResult | None = None, pack: bool = False
) -> Callable[..., Any]:
    """mlx-lm's batch iterator, except that evaluations always draw the same batches.

    mlx-lm shuffles validation batches with numpy's global state, so with `val_batches` below
    the set's size each evaluation scores a different sample and the losses being compared (to
    keep the best adapter, to stop early) differ by sampling noise. Seeding only the evaluation's
    draw and restoring the state after it also leaves the training batch order independent of
    how often evaluations run. `counted.rank_tokens` adds up the tokens of this rank's training
    batches (under mlx.launch each rank draws its own share of every global batch). With `pack`
    the batches are packed rows (engine.models.packing).
    """
    import numpy as np
    from mlx_lm.tuner.trainer import iterate_batches as plain

    from engine.models.packing import iterate_packed, packed_tokens

    iterate_batches = iterate_packed if pack else plain

    def batches(**kwargs: Any) -> Any:  # mlx-lm passes every argument by keyword
        if kwargs.pop("loop", False):  # the training stream
            for batch in iterate_batches(**kwargs, loop=True):
                if counted is not None:
                    counted.rank_tokens += packed_tokens(batch) if pack else loss_tokens(*batch)
                yield batch
            return
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            stream = iterate_batches(**kwargs, loop=False)
            first = next(stream, None)  # the permutation is drawn here
        finally:
            np.random.set_state(saved)
        if first is not None:
            yield first
            yield from stream

    return batches


def loss_tokens(batch: Any, lengths: Any) -> int:
    """The target tokens `train_loss` counts in a batch: per row, the positions from
    max(offset, 1) to its length - 1 (offset: where the answer starts)."""
    mx = import_mlx()
    last = mx.minimum(lengths[:, 1], batch.shape[1])
    return int(mx.maximum(last - mx.maximum(lengths[:, 0], 1), 0).sum().item())


def _datasets(tokenizer: Any, train: list[dict], valid: list[dict], cfg: Train) -> tuple[Any, Any]:
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset

    if len(train) < cfg.batch_size:
        raise RecipeError(
            f"train.batch_size is {cfg.batch_size} but the training set has only "
            f"{len(train)} examples; lower batch_size or add data"
        )
    val = (
        CacheDataset(ChatDataset(valid, tokenizer, mask_prompt=cfg.mask_prompt))
        if len(valid) >= cfg.batch_size
        else None
    )
    return CacheDataset(ChatDataset(train, tokenizer, mask_prompt=cfg.mask_prompt)), val


def train_adapter(
    model_path: Path | str,
    train: list[dict],
    valid: list[dict],
    cfg: Train,
    adapter_dir: Path,
    learning_rate: float,
    iters: int,
    on_report: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train one adapter into `adapter_dir` (adapter_config.json + adapters.safetensors)."""
    mx = import_mlx()
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm import load
    from mlx_lm.tuner.trainer import TrainingArgs, evaluate
    from mlx_lm.tuner.trainer import train as tuner_train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from engine.models.cpu_attention import attending_on_cpu
    from engine.models.cpu_streams import halves_on_two_streams
    from engine.models.cpu_swiglu import swiglu_on_cpu
    from engine.models.loss import train_loss
    from engine.models.packed_weights import packing_frozen_weights
    from engine.models.packing import attention_within_examples, packed_loss
    from engine.models.resolve import cast_for_device, flat_parameters

    started = time.perf_counter()
    # Under mlx.launch every rank runs this; the same seeds give every rank the same batch order
    # (each takes its share of each global batch) and the same LoRA init. Only rank 0 writes files.
    world = mx.distributed.init()
    writes = world.rank() == 0
    np.random.seed(cfg.seed)  # mlx-lm's batch order uses numpy's global state
    mx.random.seed(cfg.seed)  # LoRA init and dropout
    model, tokenizer = load(str(model_path))[:2]
    cast_for_device(model, cfg.dtype)
    if cfg.lora.layers > len(model.layers):
        raise RecipeError(f"train.lora.layers is {cfg.lora.layers} but the model has {len(model.layers)} blocks")
    model.freeze()
    config = adapter_config(cfg, learning_rate, iters)
    linear_to_lora_layers(model, cfg.lora.layers, config["lora_parameters"], use_dora=cfg.fine_tune_type == "dora")
    result = TrainResult(learning_rate=learning_rate, iters=iters, world_size=world.size())
    result.trainable_parameters = sum(v.size for _, v in flat_parameters(model.trainable_parameters()))
    train_set, val_set = _datasets(tokenizer, train, valid, cfg)
    if writes:
        adapter_dir.mkdir(parents=True, exist_ok=True)
        (adapter_dir / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    args = TrainingArgs(
        # The global batch: mlx-lm's iterate_batches gives each rank batch_size / world size rows
        # of it and the trainer averages the ranks' gradients, so this is the same on any world size.
        batch_size=cfg.batch_size,
        iters=iters,
        val_batches=cfg.val_batches,
        steps_per_report=min(cfg.steps_per_report, iters),
        steps_per_eval=cfg.steps_per_eval,
        steps_per_save=iters + 1,
        max_seq_length=cfg.max_seq_length,
        grad_checkpoint=cfg.grad_checkpoint,
        grad_accumulation_steps=cfg.grad_accumulation,
        adapter_file=str(adapter_dir / "adapters.safetensors"),
    )
    optimizer = optim.Adam(learning_rate=lr_schedule(cfg, learning_rate, iters))
    patience = cfg.early_stopping.patience if cfg.early_stopping and val_set is not None else None
    keep = KeepBest(model, patience)
    batches = same_batches_each_evaluation(cfg.seed, counted=result, pack=cfg.pack)
    loss = packed_loss if cfg.pack else train_loss
    result.trained_iters = iters
    # attending_on_cpu first: packing's block mask then goes through the same CPU attention
    with (
        keeping_freed_buffers() as cache_limit,
        attending_on_cpu(model),
        swiglu_on_cpu(model),
        attention_within_examples(model) if cfg.pack else contextlib.nullcontext(),
        halves_on_two_streams(model, world.size(), cfg.grad_checkpoint),
        packing_frozen_weights(model),
    ):
        try:
            tuner_train(
                model=model,
                optimizer=optimizer,
                train_dataset=train_set,
                val_dataset=val_set,
                # mlx-lm empties the allocator's cache after every step unless it holds more than this
                args=dataclasses.replace(args, clear_cache_threshold=cache_limit),
                loss=loss,
                iterate_batches=batches,
                training_callback=_callback(result, keep, on_report),
            )
        except StopTraining as stop:
            result.trained_iters, result.stopped_early = stop.iteration, True
        if val_set is not None and not result.stopped_early:  # the trainer's last evaluation runs before the last step
            tic = time.perf_counter()
            val_loss = evaluate(
                model=model,
                dataset=val_set,
                batch_size=cfg.batch_size,
                num_batches=cfg.val_batches,
                max_seq_length=cfg.max_seq_length,
                loss=loss,
                iterate_batches=batches,
            )
            result.val.append({"iteration": iters, "loss": float(val_loss), "time_s": time.perf_counter() - tic})
            keep.offer(iters, float(val_loss))
    _publish(model, keep, result, adapter_dir / "adapters.safetensors" if writes else None)
    result.wall_time_s = time.perf_counter() - started
    return result


def _publish(model: Any, keep: KeepBest, result: TrainResult, path: Path | None) -> None:
    """Write the kept adapter: the lowest-validation-loss snapshot, else (no validation set, or
    no finite validation loss) the weights after the last step."""
    mx = import_mlx()
    from mlx.utils import tree_flatten

    if keep.weights is not None:
        weights = keep.weights
        result.kept_iteration, result.kept_val_loss = keep.iteration, keep.loss
    else:
        weights = dict(tree_flatten(model.trainable_parameters()))
        result.kept_iteration = result.trained_iters
    if path is None:  # a rank other than 0: the same weights, written once by rank 0
        return
    mx.save_safetensors(str(path), weights)
