"""SwiGLU (silu(gate) * up) for training on CPU, with a backward MLX can fuse.

MLX's traced backward of mlx-lm's `swiglu` reuses the forward's sigmoid in two places, and MLX's
compiler leaves a value with several consumers out of its fused kernels: the sigmoid then runs
as MLX's own Sigmoid op, whose exp is scalar in the Linux wheel (~16 ns an element; 6.3 ms for
one 256 x 1536 gate, ~50 ms of a LoRA step over 8 layers). Here each gradient is one fused
kernel with its own sigmoid, written two ways, so that the compiler's common-subexpression pass
cannot merge them (or the forward's) back into one shared value: a layer's SwiGLU forward and
backward, compiled, takes ~1.75 ms instead of ~7.5 ms. engine.models.native_jit makes the
fused kernels' exp vectorized.
"""

from __future__ import annotations

import contextlib
from typing import Any

from engine.models.blas import import_mlx
from engine.models.cpu_streams import per_stream
from engine.models.swap import swapped_global

EXP_CEILING = 80.0  # exp(80) is finite in float32, and sigmoid(80) is 1 to float precision
# Every wrapper made, kept for the life of the process. A compiled training step holds the
# wrapper's backward in MLX's compile cache; were that its last reference, MLX's exit-time
# clearing of the cache would free the backward's own compiled kernels from inside the clearing,
# re-enter the cache's lock and abort the interpreter ("Resource deadlock avoided", exit 134).
_MADE: dict[int, tuple[Any, Any]] = {}  # id(original): (original, our wrapper)


def _swiglu(original: Any) -> Any:
    """`original` (mlx-lm's compiled swiglu) forward, and a fused backward: one per original."""
    if id(original) not in _MADE:
        _MADE[id(original)] = (original, _made_swiglu(original))
    return _MADE[id(original)][1]


def _made_swiglu(original: Any) -> Any:
    mx = import_mlx()
    per_stream_made: dict[Any, Any] = {}

    def on_cpu_or_original(gate: Any, up: Any) -> Any:
        if mx.default_device() != mx.cpu:
            return original(gate, up)
        return per_stream(lambda stream: _fused_backward(original, stream), per_stream_made)(gate, up)

    return on_cpu_or_original


def _fused_backward(original: Any, stream: Any) -> Any:
    """`original` forward; its backward, on `stream`, in two fused kernels."""
    mx = import_mlx()

    @mx.compile
    def up_grad(gate: Any, grad: Any) -> Any:  # grad * silu(gate); sigmoid as 1 / (1 + e^-x)
        return grad * gate / (1.0 + mx.exp(-gate))

    @mx.compile
    def gate_grad(gate: Any, up: Any, grad: Any) -> Any:  # d silu = s (1 + x (1 - s)); s as e^x / (1 + e^x)
        exps = mx.exp(mx.minimum(gate, EXP_CEILING))
        sig = exps / (1.0 + exps)
        return grad * up * sig * (1.0 + gate * (1.0 - sig))

    @mx.custom_function
    def swiglu(gate: Any, up: Any) -> Any:
        return original(gate, up)

    @swiglu.vjp
    def swiglu_vjp(primals: Any, grad: Any, _output: Any) -> Any:
        gate, up = primals
        with mx.stream(stream):
            return gate_grad(gate, up, grad), up_grad(gate, grad)

    return swiglu


def swiglu_on_cpu(model: Any) -> contextlib.AbstractContextManager[None]:
    """While `model` trains, its module's `swiglu` (where it has one) differentiates as above on
    the CPU; elsewhere it is mlx-lm's."""
    return swapped_global(model, "swiglu", _swiglu)
