"""MLX's CPU kernels compiled for the CPU they run on (Linux x86-64).

`mx.compile` fuses elementwise work (SiLU, the loss's exp, ...) into C++ that MLX compiles at
run time with `g++ -O3`, from the command in mlx/backend/cpu/jit_compiler.cpp. The Linux wheel is
built for baseline x86-64, so that command targets SSE2 only, and MLX's `exp` (shared by Exp and
Sigmoid) stores its 2^n through memory and selects with branches, which gcc will not vectorize:
a fused exp costs ~15 ns an element, numpy's ~1.5 ns. Training spends most of its non-GEMM time
there (SmolLM2-135M: ~57M exps a step). Upstream only adds -mavx2 when the library itself was
built with AVX2, which the PyPI wheel is not.

The engine therefore puts a `g++` wrapper first on PATH. For MLX's own JIT command (a shared
library written into MLX's kernel folder) it adds -mavx2 -mfma -mf16c and -fno-trapping-math,
and force-includes a header that specializes `simd::exp<float, 1>` with the same polynomial in a
branch-free form gcc vectorizes (8 floats an instruction: 3.6 ns an element in a fused MLX
kernel, allocation included). If that compile fails for any reason, the wrapper runs MLX's
command unchanged; every other g++ call passes straight through. It is enabled only where the
CPU has AVX2, FMA and F16C and a g++ exists, and `RECIPE_NATIVE_JIT=0` turns it off.

Kernels compiled without the wrapper would be reused as they are: MLX compiles a kernel only
when its file is missing, and every process of a user shares one kernel folder, whether it ran
before the engine, beside it with `RECIPE_NATIVE_JIT=0`, or as a plain `mlx_lm` command. A fused
SiLU from such a kernel cost 6.1 ms instead of 0.37 ms for 256 x 1536 floats. So the header also
puts a marker string into every kernel the wrapper builds, and each enabling process removes the
kernels without it, under a file lock; a stamp's time bounds that check to the kernels written
since the last one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("engine.models")

REQUIRED_CPU_FLAGS = ("avx2", "fma", "f16c")
EXTRA_FLAGS = "-mavx2 -mfma -mf16c -fno-trapping-math"
OFF_SWITCH = "RECIPE_NATIVE_JIT"

# exp(x) = 2^i * p(f) with x*log2(e) = i + f, |f| <= 0.5: MLX's own coefficients, so results
# match its scalar exp to rounding; the clamp and the selects replace its branches, and memcpy
# replaces its pointer cast, which is what lets gcc vectorize the loop.
SIMD_HEADER = """\
// Written by recipe (engine/models/native_jit.py): a vectorizable float exp for MLX's CPU JIT.
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>

namespace mlx::core::simd {

static inline float recipe_exp_float(float x) {
  float clamped = x < -88.0f ? -88.0f : (x > 88.0f ? 88.0f : x);
  float t = clamped * 1.442695f;
  float whole = __builtin_floorf(t + 0.5f);
  float f = t - whole;
  float p = 1.535336188319500e-4f;
  p = __builtin_fmaf(p, f, 1.339887440266574e-3f);
  p = __builtin_fmaf(p, f, 9.618437357674640e-3f);
  p = __builtin_fmaf(p, f, 5.550332471162809e-2f);
  p = __builtin_fmaf(p, f, 2.402264791363012e-1f);
  p = __builtin_fmaf(p, f, 6.931472028550421e-1f);
  p = __builtin_fmaf(p, f, 1.0f);
  int32_t bits = (static_cast<int32_t>(whole) + 127) << 23;
  float two_to_whole;
  std::memcpy(&two_to_whole, &bits, sizeof two_to_whole);
  float result = two_to_whole * p;
  result = x > 88.0f ? std::numeric_limits<float>::infinity() : result;
  result = x < -88.0f ? 0.0f : result;
  return x != x ? x : result;
}

template <>
inline Simd<float, 1> exp<float, 1>(Simd<float, 1> in) {
  return Simd<float, 1>{recipe_exp_float(in.value)};
}

}  // namespace mlx::core::simd

// Tells this kernel apart from one built without the wrapper (native_jit.clear_plain_kernels).
[[gnu::used]] static const char recipe_native_kernel_marker[] = "recipe-native-kernel";
"""
MARKER = b"recipe-native-kernel"

# MLX runs: g++ -std=c++17 -O3 -Wall -fPIC -shared [-I "<include>"] "<dir>/<kernel>.cpp" -o "<dir>/lib<kernel>.so"
# with <dir> = <temp>/mlx/<version>/cpu (MLX 0.32 writes a tmp_*.so there and renames it). Only
# that shape gets the extra flags.
WRAPPER = """\
#!/bin/sh
# Written by recipe (engine/models/native_jit.py). MLX's CPU JIT compiles kernels with plain
# `g++ -O3`; this adds the flags of the CPU the engine found, and a vectorizable exp. Any other
# g++ call, or a failure with the extra flags, runs the real compiler unchanged.
real={real}
is_mlx_kernel=no
previous=
for arg in "$@"; do
  case "$previous:$arg" in
    -o:*/mlx/*/cpu/*.so) is_mlx_kernel=yes ;;
  esac
  previous="$arg"
done
if [ "$is_mlx_kernel" = yes ]; then
  "$real" "$@" {flags} -include mlx/backend/cpu/compiled_preamble.h -include {header} 2>/dev/null && exit 0
fi
exec "$real" "$@"
"""

_state: dict[str, str | None] = {}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty if unreadable)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def why_not(system: str, machine: str, flags: Iterable[str], gxx: str | None, cuda: str | None) -> str | None:
    """None when native kernels apply, else the reason they do not."""
    if os.environ.get(OFF_SWITCH, "").strip().lower() in ("0", "false", "no", "off"):
        return f"{OFF_SWITCH} is off"
    if system != "Linux" or machine not in ("x86_64", "AMD64"):
        return f"only for Linux x86-64 (this is {system} {machine})"
    if cuda:
        return f"{cuda} is installed: MLX runs on the GPU"
    missing = [flag for flag in REQUIRED_CPU_FLAGS if flag not in set(flags)]
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    if gxx is None:
        return "no g++ on PATH (MLX then runs its kernels uncompiled)"
    return None


def write_wrapper(folder: Path, real_gxx: str, header_text: str = SIMD_HEADER) -> Path:
    """The folder holding `g++` (the wrapper) and its header, written atomically; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    header = folder / "recipe_mlx_simd.h"
    wrapper = folder / "g++"
    _write_atomic(header, header_text, mode=0o644)
    script = WRAPPER.format(real=shlex.quote(real_gxx), flags=EXTRA_FLAGS, header=shlex.quote(str(header)))
    _write_atomic(wrapper, script, mode=0o755)
    return folder


def _write_atomic(path: Path, text: str, mode: int) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    partial.chmod(mode | stat.S_IRUSR)
    os.replace(partial, path)


def mlx_kernel_dir(mlx_version: str) -> Path:
    """Where MLX keeps compiled CPU kernels: std::filesystem::temp_directory_path()/mlx/<version>/cpu."""
    temp = next((os.environ[k] for k in ("TMPDIR", "TMP", "TEMP", "TEMPDIR") if os.environ.get(k)), "/tmp")
    return Path(temp) / "mlx" / mlx_version / "cpu"


def clear_plain_kernels(kernel_dir: Path, stamp_name: str) -> int:
    """Remove the kernels built without the wrapper (no MARKER inside); returns how many went.

    Only kernels written since the stamp's time are read (each is a few KB; the folder keeps
    every shape MLX ever compiled), then the stamp is renewed. A second of slack covers a kernel
    that was being written while the last check ran."""
    kernel_dir.mkdir(parents=True, exist_ok=True)
    stamp = kernel_dir / stamp_name
    with _locked(kernel_dir / ".recipe-native.lock"):
        since = stamp.stat().st_mtime - 1.0 if stamp.exists() else None
        removed = 0
        for lib in kernel_dir.glob("lib*.so"):
            with contextlib.suppress(FileNotFoundError):
                if since is not None and lib.stat().st_mtime < since:
                    continue
                if MARKER not in lib.read_bytes():
                    lib.unlink()
                    removed += 1
        stamp.write_text("kernels without recipe's marker removed up to this file's time\n", encoding="utf-8")
        return removed


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _path_without_wrappers() -> list[str]:
    """PATH minus any wrapper folder (a child process inherits its parent's)."""
    return [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and "/recipe/mlx-jit-" not in p]


def real_gxx() -> str | None:
    """The g++ the wrapper calls: the first on PATH that is not a wrapper."""
    return shutil.which("g++", path=os.pathsep.join(_path_without_wrappers()))


def wrapper_home() -> Path:
    """A per-user folder for the wrapper, named by its content (a new engine writes a new one)."""
    digest = hashlib.sha256(f"{WRAPPER}{EXTRA_FLAGS}{SIMD_HEADER}".encode()).hexdigest()[:12]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recipe" / f"mlx-jit-{digest}"


def ensure_native_jit(mlx_version: str, cuda: str | None) -> str | None:
    """Put the wrapper first on PATH once per process; returns its folder, or None (logged why).

    MLX reads PATH when it compiles a kernel, so this may run after `import mlx.core`."""
    if "dir" in _state:
        return _state["dir"]
    gxx = real_gxx()
    reason = why_not(platform.system(), platform.machine(), cpu_flags(), gxx, cuda)
    folder = None
    if reason is not None:
        log.debug("MLX CPU kernels stay as MLX builds them: %s", reason)
        os.environ["PATH"] = os.pathsep.join(_path_without_wrappers())  # off also for an inherited wrapper
    else:
        assert gxx is not None  # why_not checked
        try:
            home = write_wrapper(wrapper_home(), gxx)
            os.environ["PATH"] = os.pathsep.join([str(home), *_path_without_wrappers()])
            stamp = f".recipe-native-{home.name}"
            removed = clear_plain_kernels(mlx_kernel_dir(mlx_version), stamp) if mlx_version else 0
            folder = str(home)
            log.debug("MLX CPU kernels compile with %s via %s (%d older kernels cleared)", EXTRA_FLAGS, home, removed)
        except OSError as exc:  # an unwritable cache or temp folder: plain kernels, nothing lost
            log.debug("MLX CPU kernels stay as MLX builds them: %s", exc)
    _state["dir"] = folder
    return folder
