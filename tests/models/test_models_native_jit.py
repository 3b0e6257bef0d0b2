"""MLX's CPU JIT through the engine's g++ wrapper: right answers, the flags only where they belong."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.models import native_jit
from engine.models.native_jit import cpu_flags, why_not, write_wrapper

ROOT = Path(__file__).resolve().parents[2]
GXX = shutil.which("g++")
NATIVE_HERE = why_not(platform.system(), platform.machine(), cpu_flags(), GXX, None)
needs_native = pytest.mark.skipif(NATIVE_HERE is not None, reason=f"native kernels do not apply here: {NATIVE_HERE}")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no g++")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("Linux", "x86_64", {"avx2", "fma", "f16c", "sse2"}, "/usr/bin/g++", None), {}, None),
        (("Linux", "x86_64", {"avx2", "fma", "f16c"}, "/usr/bin/g++", None), {"RECIPE_NATIVE_JIT": "0"}, "is off"),
        (("Darwin", "arm64", {"avx2", "fma", "f16c"}, "/usr/bin/g++", None), {}, "only for Linux x86-64"),
        (("Linux", "aarch64", set(), "/usr/bin/g++", None), {}, "only for Linux x86-64"),
        (("Linux", "x86_64", {"avx2", "fma", "f16c"}, "/usr/bin/g++", "mlx-cuda-13"), {}, "GPU"),
        (("Linux", "x86_64", {"sse2", "avx", "fma"}, "/usr/bin/g++", None), {}, "lacks avx2, f16c"),
        (("Linux", "x86_64", {"avx2", "fma", "f16c"}, None, None), {}, "no g++"),
    ],
)
def test_native_kernels_apply_only_where_the_cpu_compiler_and_switch_allow(args, env, expected, monkeypatch):
    monkeypatch.delenv("RECIPE_NATIVE_JIT", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reason = why_not(*args)
    assert reason is None if expected is None else expected in reason


def test_cpu_flags_read_from_a_cpuinfo_file_and_survive_a_broken_one(tmp_path):
    good = tmp_path / "cpuinfo"
    good.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 fma f16c\n\nprocessor\t: 1\n")
    assert {"avx2", "fma", "f16c", "sse2"} <= cpu_flags(str(good))
    no_flags = tmp_path / "arm"
    no_flags.write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert cpu_flags(str(no_flags)) == set()
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage\nflags\t: \x80 avx2 fma\n")
    assert "avx2" in cpu_flags(str(binary))
    assert cpu_flags(str(tmp_path / "missing")) == set()


def _compile(wrapper_dir: Path, source: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(wrapper_dir / "g++"), "-std=c++17", "-O3", "-fPIC", "-shared", *extra, str(source), "-o", str(output)]
    return subprocess.run(cmd, capture_output=True, text=True)


@needs_gxx
def test_the_wrapper_leaves_every_other_compile_as_it_was(tmp_path):
    wrapper = write_wrapper(tmp_path / "w", GXX)
    source = tmp_path / "plain.cpp"
    source.write_text(
        '#ifdef __AVX2__\n#error "the wrapper added flags to a compile that is not MLX\'s"\n#endif\n'
        "int f() { return 1; }\n"
    )
    done = _compile(wrapper, source, tmp_path / "libplain.so")
    assert done.returncode == 0, done.stdout + done.stderr
    # The same name inside an MLX-shaped folder does get the flags (and fails the #error, then
    # falls back to the plain command, which succeeds): the shape of the path is what decides.
    kernel_dir = tmp_path / "mlx" / "0.0.0" / "cpu"
    kernel_dir.mkdir(parents=True)
    done = _compile(wrapper, source, kernel_dir / "tmp_1.so")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_gxx
def test_the_wrapper_survives_spaces_and_quotes_in_its_paths(tmp_path):
    tools = tmp_path / 'my "tools" $HOME'
    tools.mkdir()
    (tools / "g++").symlink_to(GXX)
    wrapper = write_wrapper(tmp_path / "cache dir" / "w", str(tools / "g++"))
    kernel_dir = tmp_path / "mlx" / "0.0.0" / "cpu"
    kernel_dir.mkdir(parents=True)
    source = kernel_dir / "k.cpp"
    source.write_text('extern "C" void k(float* x, int n) { for (int i = 0; i < n; ++i) x[i] = x[i] * 2.0f; }\n')
    import mlx.core

    include = Path(mlx.core.__file__).parent / "include"  # as MLX passes it: the flagged compile succeeds
    done = _compile(wrapper, source, kernel_dir / "libk.so", "-I", str(include))
    assert done.returncode == 0, done.stdout + done.stderr
    if shutil.which("objdump") and NATIVE_HERE is None:
        assert _uses_avx(kernel_dir / "libk.so"), "the wrapper's flags did not reach the compiler"


@needs_gxx
def test_a_failing_flagged_compile_falls_back_to_mlxs_own_command(tmp_path):
    wrapper = write_wrapper(tmp_path / "w", GXX, header_text="#error this header is broken\n")
    kernel_dir = tmp_path / "mlx" / "0.0.0" / "cpu"
    kernel_dir.mkdir(parents=True)
    source = kernel_dir / "k.cpp"
    source.write_text('extern "C" float k(float x) { return x * 2.0f; }\n')
    done = _compile(wrapper, source, kernel_dir / "libk.so")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (kernel_dir / "libk.so").stat().st_size > 0
    # A real error still reaches MLX (it reports the compiler's output and runs uncompiled).
    source.write_text("this is not C++\n")
    failed = _compile(wrapper, source, kernel_dir / "libk2.so")
    assert failed.returncode != 0 and "error" in (failed.stdout + failed.stderr)


def test_kernels_without_the_marker_are_removed_whenever_they_appear(tmp_path):
    """A kernel another process built without the wrapper (RECIPE_NATIVE_JIT=0, a plain mlx_lm
    command) after the first check is removed at the next one too (was: a stamp made the check
    once-only, and the slow kernel stayed for good); ours stay, and kernels older than the last
    check are not read again."""
    kernel_dir = tmp_path / "mlx" / "0.0.0" / "cpu"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "libold.so").write_bytes(b"\x7fELF plain")
    (kernel_dir / "libours.so").write_bytes(b"\x7fELF ..." + native_jit.MARKER + b"...")
    (kernel_dir / "old.cpp").write_text("source")
    assert native_jit.clear_plain_kernels(kernel_dir, ".recipe-native-x") == 1
    assert not (kernel_dir / "libold.so").exists()
    assert (kernel_dir / "libours.so").exists() and (kernel_dir / "old.cpp").exists()
    stamp = kernel_dir / ".recipe-native-x"
    (kernel_dir / "liblater.so").write_bytes(b"\x7fELF plain, built by a process without the wrapper")
    checked_before = kernel_dir / "libchecked.so"  # as if it had been there at the last check
    checked_before.write_bytes(b"\x7fELF unreadable to the check")
    os.utime(checked_before, (stamp.stat().st_mtime - 60, stamp.stat().st_mtime - 60))
    assert native_jit.clear_plain_kernels(kernel_dir, ".recipe-native-x") == 1
    assert not (kernel_dir / "liblater.so").exists()
    assert checked_before.exists() and (kernel_dir / "libours.so").exists()


PROBE = r"""
import json, os, sys
import numpy as np
from engine.models.blas import import_mlx, _state
mx = import_mlx()
values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 88.0, 88.5, -88.0, -88.5, -87.3, 87.9,
                   1e-30, -1e-30, 3e38, -3e38, 20.5, -20.5, 0.5, -0.5, 1e-7], dtype=np.float32)
grid = np.linspace(-100, 100, 20001, dtype=np.float32)
x = mx.array(np.concatenate([values, grid]))
# `+ 0.0` makes each a fused graph of two ops: MLX JIT-compiles fused graphs, not a lone op.
exp = mx.compile(lambda v: mx.exp(v) + 0.0)
sigmoid = mx.compile(lambda v: mx.sigmoid(v) + 0.0)
silu = mx.compile(lambda v: v * mx.sigmoid(v))
print(json.dumps({
    "wrapper": _state.get("native_jit"),
    "path0": os.environ["PATH"].split(os.pathsep)[0],
    "exp": np.array(exp(x)).tolist(), "sigmoid": np.array(sigmoid(x)).tolist(), "silu": np.array(silu(x)).tolist(),
    "x": np.array(x).tolist(),
}))
"""


def _probe(tmp_path: Path, **env: str) -> dict:
    environment = {**os.environ, "TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), **env}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, env=environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _kernels(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "mlx").glob("*/cpu/lib*.so"))


def _uses_avx(lib: Path) -> bool:
    return "ymm" in subprocess.run(["objdump", "-d", str(lib)], capture_output=True, text=True).stdout


@needs_native
def test_kernels_compiled_for_this_cpu_give_numpys_answers_on_hostile_inputs(tmp_path):
    import numpy as np

    stale = tmp_path / "mlx"
    result = _probe(tmp_path)
    assert result["wrapper"] and result["path0"] == result["wrapper"]
    x = np.array(result["x"], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want_exp = np.exp(x)
        want_sigmoid = 1.0 / (1.0 + np.exp(-x))
        want_silu = x * want_sigmoid
    got_exp, got_sigmoid = np.array(result["exp"]), np.array(result["sigmoid"])
    assert np.isnan(got_exp[np.isnan(x)]).all()
    finite = np.isfinite(x) & (np.abs(x) < 87.0)
    np.testing.assert_allclose(got_exp[finite], want_exp[finite], rtol=5e-6)  # MLX's polynomial: ~4e-6
    assert (got_exp[x > 88.0] == np.inf).all() and (got_exp[x < -88.0] == 0.0).all()
    ok = ~np.isnan(x)
    np.testing.assert_allclose(got_sigmoid[ok], want_sigmoid[ok], rtol=5e-6, atol=1e-30)
    np.testing.assert_allclose(np.array(result["silu"])[finite], want_silu[finite], rtol=5e-6, atol=1e-30)
    kernels = _kernels(tmp_path)
    assert len(kernels) >= 3
    if shutil.which("objdump"):
        assert all(_uses_avx(lib) for lib in kernels), "a kernel was compiled without the wrapper's flags"
    assert stale.exists()


@needs_native
def test_kernels_compiled_before_the_wrapper_are_recompiled_and_the_switch_turns_it_off(tmp_path):
    off = _probe(tmp_path, RECIPE_NATIVE_JIT="0")
    assert off["wrapper"] is None and "mlx-jit-" not in off["path0"]
    plain = _kernels(tmp_path)
    assert plain
    if shutil.which("objdump"):
        assert not any(_uses_avx(lib) for lib in plain)
    on = _probe(tmp_path)  # same kernel folder: the stale plain kernels must not be reused
    assert on["wrapper"] and on["exp"][5:] == pytest.approx(off["exp"][5:], rel=5e-6, nan_ok=True)
    ours = _kernels(tmp_path)
    assert ours and all(native_jit.MARKER in lib.read_bytes() for lib in ours)
    if shutil.which("objdump"):
        assert all(_uses_avx(lib) for lib in ours)
    # A process without the wrapper rebuilds the kernels after that check: the next enabling
    # process must not take them (the old once-only check did, and stayed ~16x slower).
    for lib in ours:
        lib.unlink()
    _probe(tmp_path, RECIPE_NATIVE_JIT="0")
    assert not any(native_jit.MARKER in lib.read_bytes() for lib in _kernels(tmp_path))
    _probe(tmp_path)
    assert all(native_jit.MARKER in lib.read_bytes() for lib in _kernels(tmp_path))
