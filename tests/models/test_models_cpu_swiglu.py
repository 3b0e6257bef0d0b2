"""The engine's SwiGLU for CPU training: mlx-lm's values and gradients, swapped in only while training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.models import cpu_swiglu
from engine.models.blas import import_mlx

ROOT = Path(__file__).resolve().parents[2]


def _close(ours, reference, tol: float) -> None:  # noqa: ANN001
    np.testing.assert_allclose(np.array(ours), np.array(reference), rtol=tol, atol=tol)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_values_and_gradients_match_mlx_lm_also_for_saturated_gates(compiled: bool):
    """Gates from -200 to 200: the sigmoid saturates at both ends (e^200 overflows float32),
    and the written-out gradients must still be mlx-lm's, not inf or nan."""
    from mlx_lm.models.activations import swiglu

    mx = import_mlx()
    rng = np.random.default_rng(0)
    gate = mx.array(np.concatenate([rng.normal(size=300) * 4, np.linspace(-200, 200, 101), [0.0, 80.0, 90.0]]))
    up = mx.array(rng.normal(size=gate.shape[0]).astype(np.float32))
    weights = mx.array(rng.normal(size=gate.shape[0]).astype(np.float32))
    ours_fn = cpu_swiglu._swiglu(swiglu)

    def grads(fn):  # noqa: ANN001, ANN202
        step = mx.value_and_grad(lambda g, u: (fn(g, u) * weights).sum(), argnums=(0, 1))
        return mx.compile(step) if compiled else step

    (our_value, our_grads), (ref_value, ref_grads) = grads(ours_fn)(gate, up), grads(swiglu)(gate, up)
    _close(ours_fn(gate, up), swiglu(gate, up), 0)
    _close(our_value, ref_value, 1e-4)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        assert np.isfinite(np.array(mine)).all()
        _close(mine, theirs, 1e-5)


def test_the_swap_trains_a_model_to_mlx_lms_gradients_and_ends_with_the_run(tiny_llama: Path):
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from engine.models.loss import train_loss

    mx = import_mlx()
    import mlx.nn as nn

    model, _ = load(str(tiny_llama))
    model.freeze()
    mx.random.seed(1)
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 20.0, "dropout": 0.0, "keys": None})
    for _, m in model.named_modules():
        if hasattr(m, "lora_b"):  # B starts at zero, where no gradient reaches A
            m.lora_b = mx.random.normal(m.lora_b.shape) * 0.05
    batch = (mx.array(np.random.default_rng(2).integers(3, 250, size=(2, 33))), mx.array([[0, 33], [4, 30]]))
    module = sys.modules[type(model).__module__]
    shipped = module.swiglu

    def loss_and_grads() -> tuple[float, dict]:
        (value, _), grads = nn.value_and_grad(model, train_loss)(model, *batch)
        mx.eval(value, grads)
        return value.item(), dict(tree_flatten(grads))

    reference = loss_and_grads()
    with cpu_swiglu.swiglu_on_cpu(model):
        assert module.swiglu is not shipped
        with cpu_swiglu.swiglu_on_cpu(model):  # a nested user shares the swap
            pass
        assert module.swiglu is not shipped
        ours = loss_and_grads()
    assert module.swiglu is shipped
    assert ours[0] == pytest.approx(reference[0], rel=1e-5)
    assert ours[1].keys() == reference[1].keys()
    mlp_grads = [name for name in reference[1] if ".mlp." in name]
    assert mlp_grads  # the LoRA layers behind the SwiGLU got gradients through it
    for name, grad in reference[1].items():
        _close(ours[1][name], grad, 2e-4)


def test_a_process_that_trained_through_the_swap_exits_cleanly(tmp_path: Path):
    """A compiled step traced through the swap outlives it in MLX's compile cache. When the swap's
    backward had no other owner, MLX's exit-time clearing of that cache freed the backward's own
    compiled kernels from inside the clearing and the interpreter aborted (exit 134,
    "Resource deadlock avoided") after a script had trained and finished."""
    script = tmp_path / "train_then_exit.py"
    script.write_text(
        "import mlx.nn as nn\n"
        "from mlx_lm.models import llama\n"
        "from engine.models.blas import import_mlx\n"
        "from engine.models.cpu_swiglu import swiglu_on_cpu\n"
        "mx = import_mlx()\n"
        "args = llama.ModelArgs(model_type='llama', hidden_size=16, num_hidden_layers=1,\n"
        "    intermediate_size=32, num_attention_heads=2, rms_norm_eps=1e-5, vocab_size=50)\n"
        "model = llama.Model(args)\n"
        "loss_and_grad = nn.value_and_grad(model, lambda m, x: m(x).sum())\n"
        "step = mx.compile(lambda x: loss_and_grad(model, x), inputs=model.state)\n"
        "with swiglu_on_cpu(model):\n"
        "    mx.eval(step(mx.array([[1, 2, 3]])))\n"
        "print('trained')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (done.returncode, done.stdout.strip()) == (0, "trained"), done.stderr[-2000:]
