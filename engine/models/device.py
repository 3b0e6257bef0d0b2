"""Which device MLX computes on here: recorded in the manifest and train's metrics, shown by `recipe show`.

MLX picks its default device itself: the GPU where its Metal (macOS) or CUDA (`recipe[cuda]`
on Linux) backend finds one, else the CPU. Training and the `mlx:` provider use that default,
so this report is what actually ran.
"""

from __future__ import annotations

from typing import Any

from engine.models.blas import cuda_backend_installed, import_mlx


def device_report() -> dict[str, Any]:
    """{"device": "gpu"|"cpu", "name", "metal", "cuda"}; {"device": None, "error"} without a usable mlx."""
    try:
        mx = import_mlx()
        device = mx.default_device()
    except Exception as e:  # noqa: BLE001 - a broken or missing mlx must not stop a manifest being written
        return {"device": None, "error": f"{type(e).__name__}: {e}"}
    kind = "gpu" if device.type == mx.gpu else "cpu"
    report: dict[str, Any] = {
        "device": kind,
        "name": _name(mx),
        "metal": _available(mx, "metal"),
        "cuda": _available(mx, "cuda"),
    }
    if warning := _cuda_missing(mx, report["cuda"]):
        report["warning"] = warning
    return report


def _cuda_missing(mx: Any, cuda_available: bool) -> str | None:
    """Why an installed CUDA backend is not in use: no GPU, or mlx-cpu's libmlx.so won.

    `recipe[cuda]` installs mlx-cuda-12 beside the base mlx-cpu and both ship mlx/lib/libmlx.so;
    pip may leave the CPU one in place, and then everything silently runs on the CPU.
    """
    cuda = cuda_backend_installed()
    if cuda is None or cuda_available:
        return None
    return (
        f"{cuda} is installed but MLX sees no CUDA GPU: without an NVIDIA GPU and driver this is expected; "
        f"otherwise mlx-cpu's library replaced the CUDA one: pip install --force-reinstall --no-deps "
        f"{cuda}=={getattr(mx, '__version__', '<mlx version>')}"
    )


def _name(mx: Any) -> str | None:
    info = getattr(mx, "device_info", None)  # mlx >= 0.29; earlier: mx.metal.device_info on Macs only
    try:
        found = info() if info else {}
    except Exception:  # noqa: BLE001 - a name is nice to have, never needed
        return None
    name = found.get("device_name")
    return str(name) if name else None


def _available(mx: Any, backend: str) -> bool:
    module = getattr(mx, backend, None)
    try:
        return bool(module and module.is_available())
    except Exception:  # noqa: BLE001 - an mlx built without the backend may raise instead of saying no
        return False


def describe(report: dict[str, Any] | None) -> str:
    """One line for `recipe show`: "gpu (NVIDIA H100 80GB HBM3, cuda)" or "cpu (Intel Xeon)"."""
    if not report:
        return "unknown (run made before devices were recorded)"
    if report.get("device") is None:
        return f"unknown ({report.get('error', 'mlx not importable')})"
    backends = [b for b in ("cuda", "metal") if report.get(b)]
    details = ", ".join(filter(None, [report.get("name"), *backends]))
    line = f"{report['device']} ({details})" if details else str(report["device"])
    return f"{line}; WARNING: {report['warning']}" if report.get("warning") else line
