"""GEMMs from MKL-packed frozen weights: the same losses and gradients, only while training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.models import blas, packed_weights
from engine.models.blas import import_mlx
from engine.models.loss import train_loss
from tests.models.test_models_cpu_streams import _lora_model, _loss_and_grads, _plain_batch

ROOT = Path(__file__).resolve().parents[2]
INSIDE = "RECIPE_TEST_PACKED_IN_FRESH_PROCESS"


def test_these_checks_in_a_fresh_process() -> None:
    """Whether the library sits ahead of MKL is settled when a process first loads MLX, and in
    the whole suite an earlier test may have loaded llama.cpp (then the engine takes OpenBLAS):
    the checks below therefore also run in an interpreter of their own, where they must pass."""
    if os.environ.get(INSIDE):
        pytest.skip("this is the fresh process")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not fresh_process"],
        capture_output=True,
        text=True,
        env={**os.environ, INSIDE: "1"},
        cwd=ROOT,
        timeout=600,
    )
    if done.returncode == 0 and " passed" not in done.stdout:
        pytest.skip("MKL (the `mkl` extra) or a C compiler is missing: no packed weights to check")
    assert done.returncode == 0, done.stdout[-3000:]


def _loaded() -> None:
    import_mlx()
    if "library" in packed_weights._loaded:
        return
    if os.environ.get(INSIDE) and blas.mkl_runtime() and shutil.which("gcc"):
        pytest.fail("MKL and gcc are installed, yet the packed-weights library was not loaded")
    pytest.skip("MKL (the `mkl` extra) and a C compiler are needed for packed weights, in this process")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_packed_weights_give_the_same_loss_and_gradients(tiny_llama: Path, compiled: bool) -> None:
    """Forward (x @ W.T) and backward (dy @ W) multiply from packed copies of the frozen weights,
    in both orientations, at two batch shapes (the packed form is made at the first's): the loss
    and every LoRA gradient equal the plain GEMMs' to float rounding."""
    _loaded()
    model = _lora_model(tiny_llama)
    batches = [_plain_batch(40), _plain_batch(23)]
    plain = [_loss_and_grads(model, train_loss, b, compiled) for b in batches]
    before = packed_weights.packed_gemms()
    with packing_frozen(model) as registered:
        assert registered == 2 * 7 + 1  # 2 blocks of 7 linears, and the tied embedding
        packed = [_loss_and_grads(model, train_loss, b, compiled) for b in batches]
    during = packed_weights.packed_gemms()
    # per batch: every frozen weight forward (15) and backward (12: dx of the first block's
    # q/k/v reaches nothing trainable, so MLX skips it), at both shapes
    assert during - before >= 2 * (15 + 12)
    for (loss, grads), (ref_loss, ref_grads) in zip(packed, plain, strict=True):
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for name, grad in ref_grads.items():
            np.testing.assert_allclose(grads[name], grad, rtol=1e-4, atol=1e-5 * np.abs(grad).max())
    _loss_and_grads(model, train_loss, batches[0], compiled)  # after the run: plain GEMMs again
    assert packed_weights.packed_gemms() == during


def packing_frozen(model):  # noqa: ANN001, ANN201 - the tiny model's weights are under the size threshold
    return packed_weights.packing_frozen_weights(model, min_elements=0)


def test_an_array_that_is_not_a_registered_weight_is_multiplied_as_usual(tiny_llama: Path) -> None:
    """Only the registered weights' own memory qualifies: a product with any other B (here a copy
    of a weight, with the same shape and values) does not count as packed and is exact."""
    _loaded()
    mx = import_mlx()
    model = _lora_model(tiny_llama)
    weight = model.model.layers[0].mlp.gate_proj.linear.weight  # under LoRA
    other = mx.array(np.array(weight))  # same values, its own memory
    x = mx.random.normal((9, weight.shape[1]))
    with packing_frozen(model):
        before = packed_weights.packed_gemms()
        mx.eval(x @ other.T)
        assert packed_weights.packed_gemms() == before
        from_weight = x @ weight.T
        mx.eval(from_weight)
        assert packed_weights.packed_gemms() == before + 1
    np.testing.assert_allclose(np.array(from_weight), np.array(x) @ np.array(weight).T, rtol=1e-5, atol=1e-5)


def test_the_off_switch_leaves_the_blas_alone() -> None:
    env = dict(os.environ, **{packed_weights.OFF_SWITCH: "0"})
    code = (
        "from engine.models.blas import import_mlx; import_mlx(); "
        "from engine.models import packed_weights as p; print('library' in p._loaded)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip() == "False"
