"""Fast CPU BLAS for MLX on Linux.

The mlx[cpu] wheel links a reference BLAS: a 1024^3 float32 matmul takes ~0.63 s instead of
~0.016 s with OpenBLAS (FACTS.md). Loading a fast BLAS with RTLD_GLOBAL *before* mlx is imported
makes mlx resolve its BLAS symbols (cblas_sgemm) there. Call `import_mlx()` instead of `import mlx`.

Which one: RECIPE_BLAS if set, else Intel's MKL where its wheel is installed (the `mkl` extra,
Linux x86-64), else Debian's OpenBLAS. MKL runs the training step's matrix shapes (256 rows,
576-1536 columns, and the rank-8 LoRA products) 10-30% faster than OpenBLAS 0.3.21 on 2 cores,
and keeps that speed on a busy machine, where OpenBLAS's spinning threads lose up to a third
(benchmarks/train_speed.py; README, "Measured").

Skipped where MLX's default device will be a GPU: with the CUDA backend installed (`recipe[cuda]`:
the mlx-cuda-12/13 wheel) training and generation run on the GPU, and a second BLAS loaded into
the process would only risk clashing with the one that wheel brings. This is decided before mlx
is imported (afterwards it is too late to load OpenBLAS), from the installed wheels.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import sys
from collections.abc import Iterator
from importlib import metadata
from types import ModuleType

log = logging.getLogger("engine.models")

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)
MKL_WHEEL = "mkl"  # its libmkl_rt picks the kernels of the CPU it runs on and loads its OpenMP itself
CUDA_BACKENDS = ("mlx-cuda-12", "mlx-cuda-13", "mlx-cuda")  # the wheels `mlx[cuda12]`/`mlx[cuda13]` pull in
_state: dict[str, str | None] = {}
# MLX orders a graph's work breadth first up to this many arrays wide, then depth first (its own
# default is 20). With 20, the two halves of a training step on two streams
# (engine.models.cpu_streams) came out one after the other: a 256-token LoRA step took 1.24 s
# at 20, 0.99 at 32, 0.55-0.61 at 40-96, 0.63 at 128 (mlx-lm's trainer; cpu_streams has more).
# Set before MLX is imported, which reads it once; a user's own MLX_BFS_MAX_WIDTH wins.
BFS_WIDTH = "48"
# Of the machine's memory, how much MLX's CPU allocator may hold in freed buffers while training
# (its own default is 32 MB): a step's buffers are reused by the next one instead of re-faulted.
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


def mkl_runtime() -> str | None:
    """MKL's single dynamic library (libmkl_rt.so.N) from the installed `mkl` wheel, if any."""
    try:
        wheel = metadata.distribution(MKL_WHEEL)
    except metadata.PackageNotFoundError:
        return None
    for file in wheel.files or ():
        if file.name.startswith("libmkl_rt.so"):
            # RECORD names it relative to site-packages ("../../libmkl_rt.so.3"): <prefix>/lib
            return os.path.normpath(str(wheel.locate_file(file)))
    return None


def mkl_beside_what_is_loaded() -> str | None:
    """mkl_runtime(), unless llama.cpp (llama-cpp-python, the `llamacpp:` provider) is already in
    the process: beside its GNU OpenMP threads, MLX's generation with MKL fell to ~7 tok/s on
    the demo's prompts, against ~11 with OpenBLAS and ~17 with MKL alone (2 cores)."""
    if "llama_cpp" in sys.modules:
        log.debug("llama.cpp is loaded in this process: OpenBLAS rather than MKL for MLX")
        return None
    return mkl_runtime()


def ensure_fast_blas() -> str | None:
    """Load a fast BLAS globally once (Linux only); returns its path, or None with one warning."""
    if "blas" in _state:
        return _state["blas"]
    found = None
    if platform.system() == "Linux" and (cuda := cuda_backend_installed()):
        log.debug("%s is installed: MLX runs on the GPU, OpenBLAS is not loaded", cuda)
    elif platform.system() == "Linux":
        if "mlx.core" in sys.modules:
            log.debug("mlx was imported before OpenBLAS could be loaded; BLAS stays as it is")
        for path in (os.environ.get("RECIPE_BLAS"), mkl_beside_what_is_loaded(), *OPENBLAS_CANDIDATES):
            if path and os.path.exists(path):
                if "mkl_rt" in os.path.basename(path):  # MKL: packed frozen weights ahead of it
                    from engine.models.packed_weights import load_ahead_of

                    load_ahead_of(path)
                ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
                found = path
                break
        if found is None:
            log.warning(
                "No fast BLAS found: MLX on CPU will be ~20x slower (a LoRA step ~50 s instead "
                "of ~1 s). Fix: pip install 'recipe[mkl]' (x86-64), or apt-get install "
                "libopenblas0-pthread, or set RECIPE_BLAS to a library exporting cblas_sgemm"
            )
    _state["blas"] = found
    return found


def import_mlx() -> ModuleType:
    """`mlx.core`, imported after the BLAS fix, with its CPU kernels compiled for this CPU."""
    ensure_fast_blas()
    if "mlx.core" not in sys.modules:
        os.environ.setdefault("MLX_BFS_MAX_WIDTH", BFS_WIDTH)
    import mlx.core as mx

    if "native_jit" not in _state:
        from engine.models.native_jit import ensure_native_jit

        cuda = cuda_backend_installed() if platform.system() == "Linux" else None
        _state["native_jit"] = ensure_native_jit(str(getattr(mx, "__version__", "")), cuda)
    return mx


_THREAD_CONTROLS = (  # (set, get) of the BLASes the engine loads
    ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@contextlib.contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """While inside, each product of the loaded BLAS (MKL or OpenBLAS) runs on `count` threads;
    the count before comes back afterwards. Nothing changes for a BLAS without such controls."""
    path = _state.get("blas")
    library = ctypes.CDLL(path) if path else None
    controls = next(
        ((getattr(library, s), getattr(library, g)) for s, g in _THREAD_CONTROLS if hasattr(library, s)), None
    )
    if controls is None:
        yield
        return
    set_threads, get_threads = controls
    before = int(get_threads())
    set_threads(ctypes.c_int(count))
    try:
        yield
    finally:
        set_threads(ctypes.c_int(before))


@contextlib.contextmanager
def keeping_freed_buffers() -> Iterator[int]:
    """While training on a CPU, MLX's allocator keeps freed buffers for reuse, up to
    CPU_CACHE_FRACTION of RAM; yields that limit (0 where nothing changed).

    Its default cache is 32 MB, so every larger buffer of a step (a 256-token step's logits
    alone are 50 MB) went back to glibc, which returns blocks over 32 MB to the kernel: the next
    step paid page faults to get the same memory again. A LoRA step of benchmarks/train_speed.py
    took ~900k faults over 11 steps, ~420k with the cache (most of the rest loading the model),
    and ~0.98 s instead of ~1.05 s (quiet machine, runs alternating, 3 each).
    Training only: its shapes repeat every step, while generation's grow by a token a step and
    would fill the cache with sizes nobody asks for again. The old limit comes back afterwards,
    which frees what the cache holds beyond it."""
    mx = import_mlx()
    set_cache_limit = getattr(mx, "set_cache_limit", None)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 0
    if set_cache_limit is None or ram <= 0 or platform.system() != "Linux" or cuda_backend_installed():
        yield 0
        return
    limit = int(ram * CPU_CACHE_FRACTION)
    before = set_cache_limit(limit)
    try:
        yield limit
    finally:
        set_cache_limit(before)
