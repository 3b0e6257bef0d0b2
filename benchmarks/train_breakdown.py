"""Where a LoRA training step's time goes on this machine: the engine's step taken apart.

The setting of benchmarks/train_speed.py (SmolLM2-135M from the bundled GGUF, seq 256, batch 1,
LoRA rank 8 on every linear of the last 8 blocks, float32 on CPU), with the engine's attention
and allocator settings in force. Each part is compiled and timed on its own (median of --repeats
after one warm-up); the whole step evaluates the updated weights too, so no part of its work is
left for the next measurement. The GEMM rates of the step's shapes are printed beside them: the
parts' time beyond their GEMMs is MLX's non-GEMM work (attention, norms, rope, elementwise).

    python benchmarks/train_breakdown.py [--repeats 6] [--models-dir runs/models]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_speed import LAYERS, RANK, SEQ, SPEC  # noqa: E402 - the setting train_speed.py measures

GEMM_SHAPES = [(SEQ, 576, 1536), (SEQ, 1536, 576), (SEQ, 576, 576), (SEQ, 576, 192), (SEQ, 576, 49152)]


def median_seconds(work: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first compiles
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "runs" / "models")
    args = parser.parse_args()

    from engine.models.blas import import_mlx, keeping_freed_buffers

    mx = import_mlx()
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from engine.models.cpu_attention import attending_on_cpu
    from engine.models.cpu_swiglu import swiglu_on_cpu
    from engine.models.loss import cross_entropy, train_loss
    from engine.models.resolve import resolve_model_path

    model, _ = load(str(resolve_model_path(SPEC, args.models_dir)))
    model.freeze()
    linear_to_lora_layers(model, LAYERS, {"rank": RANK, "scale": 20.0, "dropout": 0.0, "keys": None})
    tokens = mx.array(np.random.default_rng(0).integers(0, 40000, size=(1, SEQ + 1)))
    lengths = mx.array([[0, SEQ + 1]])
    optimizer = optim.Adam(learning_rate=1e-5)
    state = [model.state, optimizer.state]
    loss_and_grad = nn.value_and_grad(model, train_loss)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, spans):  # noqa: ANN001, ANN202
        (loss, _), grads = loss_and_grad(model, batch, spans)
        optimizer.update(model, grads)
        return loss

    hidden = mx.random.normal((1, SEQ, 576))
    targets = tokens[:, 1:]
    mx.eval(hidden)

    def head_loss(h):  # noqa: ANN001, ANN202
        return cross_entropy(model.model.embed_tokens.as_linear(h), targets).sum()

    forward_loss = mx.compile(lambda: train_loss(model, tokens, lengths)[0])
    forward_blocks = mx.compile(lambda: model.model(tokens[:, :-1]))
    head_forward = mx.compile(lambda: head_loss(hidden))
    head_backward = mx.compile(lambda: mx.grad(head_loss)(hidden))
    parts: dict[str, Callable[[], None]] = {
        "whole step (weights updated)": lambda: mx.eval(step(tokens, lengths), state),
        "forward + loss": lambda: mx.eval(forward_loss()),
        "forward of the 30 blocks": lambda: mx.eval(forward_blocks()),
        "lm_head + cross-entropy, forward": lambda: mx.eval(head_forward()),
        "lm_head + cross-entropy, forward + backward": lambda: mx.eval(head_backward()),
    }
    with attending_on_cpu(model), swiglu_on_cpu(model), keeping_freed_buffers():
        for name, work in parts.items():
            print(f"{name:45s} {median_seconds(work, args.repeats):6.3f} s")
    for m, k, n in GEMM_SHAPES:
        x, w = mx.random.normal((m, k)), mx.random.normal((n, k))
        mx.eval(x, w)
        seconds = median_seconds(lambda x=x, w=w: mx.eval(x @ w.T), args.repeats * 4)
        print(f"GEMM {m}x{k}x{n:<6} {2 * m * k * n / seconds / 1e9:6.0f} GFLOP/s")


if __name__ == "__main__":
    main()
