"""The device MLX computes on: in the manifest, in `recipe show`, and what it decides (BLAS, dtype)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement

from engine.cli import main
from engine.models.blas import OPENBLAS_CANDIDATES
from engine.models.device import describe, device_report
from engine.pipeline.runner import Paths, run_recipe
from engine.steps.base import RunOptions

ROOT = Path(__file__).resolve().parents[2]


def test_the_manifest_records_the_device_and_show_prints_it(tmp_path: Path, paths: Paths) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "talk.txt").write_text("Fasting lowers insulin. " * 20)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: d\ncreator:\n  name: Dr. Test\nsources:\n  - type: local\n    path: inbox\n")
    run = run_recipe(recipe, paths, until="transcripts", options=RunOptions(quiet=True))
    device = json.loads((run.run_dir / "manifest.json").read_text())["device"]
    assert device["device"] == "cpu" and device["cuda"] is False and device["metal"] is False  # this machine
    assert device["name"]  # mx.device_info()'s name of the CPU
    shown = CliRunner().invoke(main, ["show", run.run_dir.name, "--runs-dir", str(paths.runs_dir)])
    assert shown.exit_code == 0, shown.output
    assert f"device cpu ({device['name']})" in shown.output


def test_describe_names_the_gpu_and_its_backend_and_copes_with_old_or_broken_reports() -> None:
    gpu = {"device": "gpu", "name": "NVIDIA H100 80GB HBM3", "metal": False, "cuda": True}
    assert describe(gpu) == "gpu (NVIDIA H100 80GB HBM3, cuda)"
    assert describe({"device": "gpu", "name": None, "metal": True, "cuda": False}) == "gpu (metal)"
    assert describe(None).startswith("unknown (run made before")
    assert describe({"device": None, "error": "ImportError: libmlx.so"}) == "unknown (ImportError: libmlx.so)"
    assert device_report()["device"] == "cpu"
    clash = {**gpu, "device": "cpu", "cuda": False, "warning": "mlx-cuda-12 is installed but MLX sees no CUDA GPU"}
    assert describe(clash).endswith("; WARNING: mlx-cuda-12 is installed but MLX sees no CUDA GPU")


def test_an_installed_cuda_backend_that_is_not_in_use_is_reported(tmp_path: Path) -> None:
    """mlx-cuda-12 installed (its dist-info) but the CPU libmlx.so loaded: the report says how to fix it."""
    info = tmp_path / "mlx_cuda_12-0.32.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlx-cuda-12\nVersion: 0.32.4\n")
    code = "import json; from engine.models.device import device_report; print(json.dumps(device_report()))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["device"] == "cpu" and report["cuda"] is False
    assert "pip install --force-reinstall --no-deps mlx-cuda-12==" in report["warning"]


def _blas_in_a_fresh_process(extra_path: Path | None, blas: str | None = None, preload: str = "os") -> dict:
    """ensure_fast_blas() in a new interpreter (RECIPE_BLAS=`blas`, or unset; after importing
    `preload`), whether a BLAS got mapped into it, and what a product of MLX there gives."""
    code = (
        f"import {preload};"
        "import json, os; from engine.models.blas import ensure_fast_blas, cuda_backend_installed;"
        "found = ensure_fast_blas(); maps = open('/proc/self/maps').read();"
        "mapped = any(m in maps for m in ('openblas', 'libmkl_rt', os.path.realpath(found or '/-')));"
        "import mlx.core as mx; a = mx.arange(6, dtype=mx.float32).reshape(2, 3);"
        "print(json.dumps({'found': found, 'cuda': cuda_backend_installed(), 'mapped': mapped,"
        " 'product': (a @ a.T).tolist()}))"
    )
    path = [str(extra_path)] if extra_path else []
    env = {k: v for k, v in os.environ.items() if k != "RECIPE_BLAS"}
    env["PYTHONPATH"] = os.pathsep.join([*path, str(ROOT)])
    if blas:
        env["RECIPE_BLAS"] = blas
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mkl_wheel_as_installed(site: Path, library: Path) -> Path:
    """What `pip install mkl` leaves: a dist-info whose RECORD places libmkl_rt.so.3 two folders
    above site-packages (<prefix>/lib), here a link to `library`."""
    info = site / "mkl-2026.2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mkl\nVersion: 2026.2.0\n")
    (info / "RECORD").write_text("../../libmkl_rt.so.3,,\nmkl-2026.2.0.dist-info/METADATA,,\n")
    (site.parent.parent / "libmkl_rt.so.3").symlink_to(library)
    return site.parent.parent / "libmkl_rt.so.3"


def test_mkl_from_its_wheel_comes_before_openblas_and_recipe_blas_before_both(tmp_path: Path) -> None:
    openblas = next((Path(p) for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)
    if openblas is None:
        pytest.skip("needs Debian's OpenBLAS (make setup installs it)")
    # A stand-in for MKL's runtime: a real library exporting cblas_sgemm, found through the wheel's RECORD.
    site = tmp_path / "prefix" / "lib" / "python3.11" / "site-packages"
    runtime = _mkl_wheel_as_installed(site, openblas)
    chosen = _blas_in_a_fresh_process(site)
    assert chosen["found"] == str(runtime) and chosen["mapped"]
    assert chosen["product"] == [[5.0, 14.0], [14.0, 50.0]]
    assert _blas_in_a_fresh_process(site, blas=str(openblas))["found"] == str(openblas)
    # llama.cpp already in the process (the llamacpp: provider ran first): OpenBLAS, not MKL
    (site / "llama_cpp.py").write_text("")
    assert _blas_in_a_fresh_process(site, preload="llama_cpp")["found"] == str(openblas)


def test_openblas_is_skipped_when_the_cuda_backend_is_installed(tmp_path: Path) -> None:
    plain = _blas_in_a_fresh_process(None)
    assert plain["cuda"] is None and plain["found"] and plain["mapped"]  # this machine: CPU, a fast BLAS loaded
    # What `pip install mlx-cuda-12` leaves for importlib.metadata to find: its dist-info folder.
    info = tmp_path / "mlx_cuda_12-0.32.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlx-cuda-12\nVersion: 0.32.4\n")
    with_cuda = _blas_in_a_fresh_process(tmp_path)
    assert with_cuda == {"found": None, "cuda": "mlx-cuda-12", "mapped": False, "product": plain["product"]}


def test_the_cuda_extras_pull_mlx_cuda_backends_on_linux_only() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, backend in (("cuda", "cuda12"), ("cuda13", "cuda13")):
        (req,) = [Requirement(r) for r in extras[extra]]
        assert req.name == "mlx" and req.extras == {backend}
        assert req.marker is not None
        assert req.marker.evaluate({"sys_platform": "linux"}) and not req.marker.evaluate({"sys_platform": "darwin"})
        # the base install's own mlx minimum: a CUDA backend older than the mlx it sits beside would not load
        assert req.specifier.contains("0.30.4") and not req.specifier.contains("0.30.3")


def test_show_says_how_many_ranks_trained_and_nothing_for_runs_without_a_device() -> None:
    from engine.inspect.show import render_run

    gpu = {"device": "gpu", "name": "NVIDIA H100 80GB HBM3", "metal": False, "cuda": True}
    summary = {"run_dir": "runs/x", "status": "complete", "problems": {}, "verdict": None}
    train = {"distributed": {"world_size": 2, "backend": "nccl", "ranks": []}}
    shown = render_run({**summary, "manifest": {"run_id": "x", "device": gpu}, "metrics": {"train": train}})
    assert "device gpu (NVIDIA H100 80GB HBM3, cuda); trained on 2 ranks (nccl)" in shown.splitlines()
    old = render_run({**summary, "manifest": {"run_id": "x"}, "metrics": {}})
    assert "device" not in old


_REUSE = """
import json, resource
from engine.models.blas import import_mlx, keeping_freed_buffers
mx = import_mlx()
x = mx.random.normal((4096, 4096))  # 64 MB, over glibc's 32 MB ceiling for keeping freed blocks
mx.eval(x)

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        y = mx.exp(x)
        mx.eval(y)
        del y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = mx.set_cache_limit(0)
mx.set_cache_limit(default)
with keeping_freed_buffers() as limit:
    inside = {"faults": faults(), "limit": limit, "set": mx.set_cache_limit(limit)}
print(json.dumps({**inside, "default": default, "after": mx.set_cache_limit(default), "outside": faults()}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU allocator's cache is raised on Linux only")
def test_while_training_freed_cpu_buffers_are_reused_instead_of_faulted_in_again() -> None:
    """Inside keeping_freed_buffers (train_adapter's scope) a 64 MB buffer freed and asked for
    again comes from MLX's cache; outside, MLX's own 32 MB limit is back, and with it a round
    trip to the kernel and 16k page faults for every such buffer."""
    out = subprocess.run([sys.executable, "-c", _REUSE], capture_output=True, text=True, check=True, cwd=ROOT)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert found["limit"] == found["set"] == int(ram * 0.25)
    assert found["faults"] < 16384 * 3, found  # 20 rounds
    assert found["after"] == found["default"] == 32 << 20
    assert found["outside"] > 16384 * 15, found  # what every step paid before
