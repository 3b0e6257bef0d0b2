"""A training step's halves on two CPU streams: the same losses and gradients as one pass, and
one pass wherever the split does not apply."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.models import blas, cpu_streams
from engine.models.blas import import_mlx
from engine.models.cpu_streams import halves_on_two_streams, summed_over_halves
from engine.models.loss import train_loss
from engine.models.packing import attention_within_examples, packed_loss

ROOT = Path(__file__).resolve().parents[2]


def _lora_model(path: Path, layers: int = 2):  # noqa: ANN202
    """The tiny llama with LoRA on its last `layers` blocks, B nonzero (B starts at zero, where no
    gradient reaches A)."""
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    mx = import_mlx()
    model = load(str(path))[0]
    model.freeze()
    mx.random.seed(3)
    linear_to_lora_layers(model, layers, {"rank": 4, "scale": 20.0, "dropout": 0.0, "keys": None})
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.05
    return model


def _loss_and_grads(model, loss, batch, compiled: bool) -> tuple[float, dict]:  # noqa: ANN001
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    mx = import_mlx()
    loss_and_grad = nn.value_and_grad(model, loss)
    state = [model.state]  # as mlx-lm compiles its step: the model state in and out
    step = mx.compile(lambda *b: loss_and_grad(model, *b), inputs=state, outputs=state) if compiled else None
    (value, _), grads = step(*batch) if compiled else loss_and_grad(model, *batch)
    mx.eval(value, grads)
    return value.item(), {k: np.array(v) for k, v in tree_flatten(grads)}


def _plain_batch(length: int):  # noqa: ANN202
    """Two rows of `length` + 1 tokens, the second padded after 70% of it, prompts of 5 and 9."""
    mx = import_mlx()
    tokens = np.random.default_rng(7).integers(3, 250, size=(2, length + 1))
    return mx.array(tokens), mx.array([[5, length + 1], [9, int(0.7 * length)]])


def _packed_batch(length: int):  # noqa: ANN202
    """One row of three examples packed end to end (segments 1, 2, 3), then padding."""
    mx = import_mlx()
    tokens = np.random.default_rng(8).integers(3, 250, size=(1, length + 1)).astype(np.int32)
    segments = np.zeros_like(tokens)
    bounds = [0, length // 3, length // 2 + 5, length - 6]
    for s, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False), start=1):
        segments[0, a:b] = s
    weights = segments > 0
    weights[0, [0, bounds[1], bounds[2]]] = False  # each example's first token is no target
    return mx.array(tokens), mx.array(segments), mx.array(weights)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_two_halves_give_one_pass_loss_and_gradients(tiny_llama: Path, packed: bool, compiled: bool) -> None:
    """The second half attends to the first half's keys through the cache, so the loss and every
    LoRA gradient equal one pass's: for padded rows with prompts, and for packed rows whose
    examples must not see each other (an example crosses the cut)."""
    model = _lora_model(tiny_llama)
    loss, batch = (packed_loss, _packed_batch(160)) if packed else (train_loss, _plain_batch(160))
    with attention_within_examples(model) if packed else _nothing():
        one_pass = _loss_and_grads(model, loss, batch, compiled)
        with halves_on_two_streams(model) as split:
            assert split
            halves = _loss_and_grads(model, loss, batch, compiled)
    assert halves[0] == pytest.approx(one_pass[0], rel=1e-5)
    assert halves[1].keys() == one_pass[1].keys() and len(one_pass[1]) == 2 * 2 * 7  # 2 blocks, 7 linears, A and B
    for name, grad in one_pass[1].items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(halves[1][name], grad, rtol=2e-4, atol=2e-5 * np.abs(grad).max())


def _nothing():  # noqa: ANN202
    import contextlib

    return contextlib.nullcontext()


def test_the_halves_really_are_two_parts_with_the_cache(tiny_llama: Path) -> None:
    """Long rows go through the model twice, the second time from offset = the cut; short rows
    (under MIN_LENGTH) once without a cache, as outside the context."""
    model = _lora_model(tiny_llama)
    seen: list[tuple[int, int, int | None]] = []

    def part_loss(start: int, end: int, cache) -> object:  # noqa: ANN001
        seen.append((start, end, None if cache is None else cache[0].offset))
        return import_mlx().array(0.0)

    with halves_on_two_streams(model):
        summed_over_halves(model, 200, part_loss)
        summed_over_halves(model, cpu_streams.MIN_LENGTH - 1, part_loss)
    summed_over_halves(model, 200, part_loss)
    assert seen == [(0, 100, 0), (100, 200, 0), (0, cpu_streams.MIN_LENGTH - 1, None), (0, 200, None)]


def test_one_stream_where_the_split_does_not_apply(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The off switch, a distributed rank, gradient checkpointing (a recomputed block would add its
    keys to the cache twice) and an architecture whose blocks keep another kind of cache (a
    sliding window's rotating cache) train as before."""
    from mlx_lm.models import llama

    model = _lora_model(tiny_llama)
    with halves_on_two_streams(model, world_size=2) as split:
        assert not split and not cpu_streams._ACTIVE
    with halves_on_two_streams(model, grad_checkpoint=True) as split:
        assert not split
    monkeypatch.setenv(cpu_streams.OFF_SWITCH, "1")
    with halves_on_two_streams(model) as split:
        assert not split
    monkeypatch.delenv(cpu_streams.OFF_SWITCH)
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=16,
        num_hidden_layers=2,
        intermediate_size=32,
        num_attention_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=50,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=8,
    )
    with halves_on_two_streams(llama.Model(args)) as split:
        assert not split
    with halves_on_two_streams(model) as split:
        assert split and cpu_streams._ACTIVE
    assert not cpu_streams._ACTIVE


def test_each_stream_gets_its_own_custom_functions() -> None:
    """A custom function's backward runs on the stream it was made for, so each stream has its own;
    the same stream gets the same one back."""
    mx = import_mlx()
    made: dict = {}
    first = cpu_streams.per_stream(lambda stream: ("made for", stream), made)
    assert cpu_streams.per_stream(lambda stream: ("again", stream), made) is first
    other = mx.new_stream(mx.cpu)
    with mx.stream(other):
        second = cpu_streams.per_stream(lambda stream: ("made for", stream), made)
    assert second is not first and second[1] == other and first[1] == mx.default_stream(mx.cpu)


def test_blas_threads_sets_the_count_while_inside_and_restores_it() -> None:
    import_mlx()
    path = blas._state.get("blas")
    if not path:
        pytest.skip("no fast BLAS loaded")
    library = ctypes.CDLL(path)
    getter = next((getattr(library, g) for s, g in blas._THREAD_CONTROLS if hasattr(library, s)), None)
    assert getter is not None, f"{path} has neither MKL's nor OpenBLAS's thread controls"
    before = getter()
    with blas.blas_threads(1):
        assert getter() == 1
    assert getter() == before


@pytest.mark.parametrize("users_width", [None, "7"])
def test_mlx_orders_graphs_wider_unless_the_user_chose(users_width: str | None) -> None:
    """MLX reads MLX_BFS_MAX_WIDTH once, when it is first used: import_mlx sets the engine's default
    before that, and a user's own value stays."""
    env = {k: v for k, v in os.environ.items() if k != "MLX_BFS_MAX_WIDTH"}
    if users_width:
        env["MLX_BFS_MAX_WIDTH"] = users_width
    code = "import os; from engine.models.blas import import_mlx; import_mlx(); print(os.environ['MLX_BFS_MAX_WIDTH'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip() == (users_width or blas.BFS_WIDTH)


@pytest.mark.parametrize("pack", [False, True], ids=["plain", "packed"])
def test_a_training_run_on_two_streams_follows_the_one_stream_loss_curve(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pack: bool
) -> None:
    """The whole training run (mlx-lm's compiled step, its evaluations) on two streams and on one:
    the same train and validation losses at every report, within 1e-4 relative (float sums in
    another order; measured ~1e-6). At a learning rate of 5e-3 the curves part by ~1% after a
    few steps: Adam's m/sqrt(v) turns a rounding difference in a near-zero gradient into a whole
    step, as for any change of summation order; the first steps still agree to ~1e-6."""
    from engine.models.train import train_adapter
    from tests.models.test_models_train import QA, chat, recipe_with

    long_answers = [(q, " ".join([a] * 8)) for q, a in QA]  # rows of ~140-170 tokens: over MIN_LENGTH
    rows = [chat(*long_answers[i % len(QA)], system=i % 2 == 0) for i in range(16)]
    train = {"iters": 8, "batch_size": 2, "max_seq_length": 256, "steps_per_report": 1, "steps_per_eval": 4}
    recipe = recipe_with({**train, "val_batches": -1, "pack": pack, "lora": {"rank": 4, "layers": 2}}, tmp_path)
    split = cpu_streams.summed_over_halves
    lengths: list[int] = []

    def counting(model, length, part_loss):  # noqa: ANN001, ANN202 - records what each step scored
        lengths.append(length if cpu_streams._ACTIVE else 0)
        return split(model, length, part_loss)

    monkeypatch.setattr(cpu_streams, "summed_over_halves", counting)
    monkeypatch.setattr("engine.models.loss.summed_over_halves", counting)
    monkeypatch.setattr("engine.models.packing.summed_over_halves", counting)
    curves = {}
    for streams in ("2", "1"):
        monkeypatch.setenv(cpu_streams.OFF_SWITCH, streams)
        result = train_adapter(tiny_llama, rows[:12], rows[12:], recipe.train, tmp_path / streams, 2e-3, 8)
        curves[streams] = [r["loss"] for r in result.train], [r["loss"] for r in result.val]
        if streams == "2":
            assert lengths and min(lengths) >= cpu_streams.MIN_LENGTH  # every step really was split
        lengths.clear()
    assert curves["2"][0] == pytest.approx(curves["1"][0], rel=1e-4)
    assert curves["2"][1] == pytest.approx(curves["1"][1], rel=1e-4)
    assert curves["1"][1][-1] < curves["1"][1][0]
