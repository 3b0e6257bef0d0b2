"""Fast CPU BLAS for MLX on Linux.

The mlx[cpu] wheel links a reference BLAS: a 1024^3 float32 matmul takes ~0.63 s instead of
~0.016 s with OpenBLAS (FACTS.md). Loading Debian's OpenBLAS with RTLD_GLOBAL *before* mlx is
imported makes mlx resolve its BLAS symbols there. Call `import_mlx()` instead of `import mlx`.

Skipped where MLX's default device will be a GPU: with the CUDA backend installed (`recipe[cuda]`:
the mlx-cuda-12/13 wheel) training and generation run on the GPU, and a second BLAS loaded into
the process would only risk clashing with the one that wheel brings. This is decided before mlx
is imported (afterwards it is too late to load OpenBLAS), from the installed wheels.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from importlib import metadata
from types import ModuleType

log = logging.getLogger("engine.models")

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)
CUDA_BACKENDS = ("mlx-cuda-12", "mlx-cuda-13", "mlx-cuda")  # the wheels `mlx[cuda12]`/`mlx[cuda13]` pull in
_state: dict[str, str | None] = {}
# Of the machine's memory, how much MLX's CPU allocator may hold in freed buffers (its own
# default is 32 MB): the buffers of a step are reused by the next one instead of re-faulted.
CPU_CACHE_FRACTION = 0.25


def cuda_backend_installed() -> str | None:
    """The installed MLX CUDA wheel's name, if any (MLX then defaults to the GPU)."""
    for name in CUDA_BACKENDS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return None


def ensure_fast_blas() -> str | None:
    """Load OpenBLAS globally once (Linux only); returns its path, or None with one warning."""
    if "blas" in _state:
        return _state["blas"]
    found = None
    if platform.system() == "Linux" and (cuda := cuda_backend_installed()):
        log.debug("%s is installed: MLX runs on the GPU, OpenBLAS is not loaded", cuda)
    elif platform.system() == "Linux":
        if "mlx.core" in sys.modules:
            log.debug("mlx was imported before OpenBLAS could be loaded; BLAS stays as it is")
        for path in (os.environ.get("RECIPE_BLAS"), *OPENBLAS_CANDIDATES):
            if path and os.path.exists(path):
                ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
                found = path
                break
        if found is None:
            log.warning(
                "OpenBLAS not found: MLX on CPU will be ~20x slower (a LoRA step ~50 s instead "
                "of ~2.4 s). Fix: apt-get install libopenblas0-pthread (or set RECIPE_BLAS "
                "to a libblas.so.3)"
            )
    _state["blas"] = found
    return found


def import_mlx() -> ModuleType:
    """`mlx.core`, imported after the BLAS fix, with its CPU kernels compiled for this CPU."""
    ensure_fast_blas()
    import mlx.core as mx

    if "native_jit" not in _state:
        from engine.models.native_jit import ensure_native_jit

        cuda = cuda_backend_installed() if platform.system() == "Linux" else None
        _state["native_jit"] = ensure_native_jit(str(getattr(mx, "__version__", "")), cuda)
        if platform.system() == "Linux" and cuda is None:
            _keep_freed_buffers(mx)
    return mx


def _keep_freed_buffers(mx: ModuleType) -> None:
    """Let MLX's CPU allocator keep freed buffers for reuse, up to CPU_CACHE_FRACTION of RAM.

    Its default cache is 32 MB, so every larger buffer (a 256-token step's logits alone are
    50 MB) went back to glibc, which returns blocks over 32 MB to the kernel: the next step paid
    page faults to get the same memory again. A LoRA step of benchmarks/train_speed.py took
    ~900k faults over 11 steps, ~420k with the cache (most of them loading the model)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    set_cache_limit = getattr(mx, "set_cache_limit", None)
    if set_cache_limit is not None and ram > 0:
        limit = int(ram * CPU_CACHE_FRACTION)
        set_cache_limit(limit)
        _state["cache_limit"] = str(limit)


def buffer_cache_limit() -> int:
    """The bytes of freed buffers MLX keeps for reuse when the engine raised its limit, else 0.
    mlx-lm's trainer empties the cache after every step unless it holds more than its
    `clear_cache_threshold` (default 0); the engine passes this instead."""
    import_mlx()
    return int(_state.get("cache_limit") or 0)
