"""Which device MLX computes on here: recorded in the manifest and train's metrics, shown by `recipe show`.

MLX picks its default device itself: the GPU where its Metal (macOS) or CUDA (`recipe[cuda]`
on Linux) backend finds one, else the CPU. Training and the `mlx:` provider use that default,
so this report is what actually ran.
"""

from __future__ import annotations

from typing import Any

from engine.models.blas import import_mlx


def device_report() -> dict[str, Any]:
    """{"device": "gpu"|"cpu", "name", "metal", "cuda"}; {"device": None, "error"} without a usable mlx."""
    try:
        mx = import_mlx()
        device = mx.default_device()
    except Exception as e:  # noqa: BLE001 - a broken or missing mlx must not stop a manifest being written
        return {"device": None, "error": f"{type(e).__name__}: {e}"}
    kind = "gpu" if device.type == mx.gpu else "cpu"
    return {
        "device": kind,
        "name": _name(mx),
        "metal": _available(mx, "metal"),
        "cuda": _available(mx, "cuda"),
    }


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
    return f"{report['device']} ({details})" if details else str(report["device"])
