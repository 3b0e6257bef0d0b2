"""Learning-rate sweep: short trials, the lowest validation loss wins and is trained fully."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import RecipeError
from engine.models.settings import TrainSettings as Train
from engine.models.train import TrainResult, train_adapter


@dataclass
class SweepResult:
    chosen: float
    trial_iters: int
    trials: list[TrainResult] = field(default_factory=list)

    def summary(self, fraction: float) -> dict:
        return {
            "learning_rates": [t.learning_rate for t in self.trials],
            "fraction": fraction,
            "trial_iters": self.trial_iters,
            "chosen": self.chosen,
            "trials": [
                {
                    "learning_rate": t.learning_rate,
                    "final_val_loss": t.final_val_loss,
                    "train_loss": t.train,
                    "val_loss": t.val,
                    "wall_time_s": round(t.wall_time_s, 2),
                }
                for t in self.trials
            ],
        }


def pick_best(trials: list[TrainResult]) -> float:
    """The learning rate with the lowest final validation loss (non-finite losses never win)."""
    scored = [
        (t.final_val_loss, t.learning_rate)
        for t in trials
        if t.final_val_loss is not None and math.isfinite(t.final_val_loss)
    ]
    if not scored:
        raise RecipeError(
            "learning-rate sweep: no trial produced a finite validation loss; "
            "check the validation set (needs at least batch_size examples)"
        )
    return min(scored)[1]


def sweep(
    model_path: Path | str,
    train: list[dict],
    valid: list[dict],
    cfg: Train,
    iters: int,
    on_trial: Callable[[TrainResult], None] | None = None,
    trainer: Callable[[Path, float, int], TrainResult] | None = None,
) -> SweepResult:
    """Train each learning rate for `sweep_fraction` of `iters`; return the trials and the winner.

    `trainer(adapter_dir, learning_rate, iters)` trains one trial (the train step passes one that
    runs under mlx.launch for `train.distributed`); by default, train_adapter in this process.
    """
    if len(valid) < cfg.batch_size:
        raise RecipeError(
            f"a learning-rate sweep needs a validation set of at least batch_size="
            f"{cfg.batch_size} examples (it has {len(valid)}); raise split.valid"
        )
    trial_iters = max(1, round(iters * cfg.sweep_fraction))
    result = SweepResult(chosen=cfg.learning_rates[0], trial_iters=trial_iters)
    with tempfile.TemporaryDirectory(prefix="lr-sweep-") as tmp:  # trial adapters are thrown away
        for i, lr in enumerate(cfg.learning_rates):
            where = Path(tmp) / f"trial-{i}"
            trial = (
                trainer(where, lr, trial_iters)
                if trainer
                else train_adapter(model_path, train, valid, cfg, where, lr, trial_iters)
            )
            result.trials.append(trial)
            if on_trial:
                on_trial(trial)
    result.chosen = pick_best(result.trials)
    return result
