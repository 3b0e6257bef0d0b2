"""Fuse a trained adapter into its base: a dequantized HF-layout folder with tokenizer and chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from engine.models.blas import import_mlx
from engine.models.resolve import flat_parameters

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)

# What mlx_lm.load fetches for a hub id (the same list since 0.28): asking the cache for no more
# than that finds a model that training loaded, even offline.
HUB_FILES = (
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
)


def fused_model(base: Path, adapters: Path) -> Any:
    """The base with the adapter folded into its weights (quantized bases dequantized)."""
    from mlx.utils import tree_unflatten
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model

    model = load(str(base), adapter_path=str(adapters))[0]
    fused = [(name, module.fuse(dequantize=True)) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    return dequantize_model(model)


def copy_tokenizer(base: Path, out: Path) -> None:
    """Tokenizer files as the base has them, with the chat template inside tokenizer_config.json
    (llama.cpp converters and transformers both look there)."""
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copy(base / name, out / name)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    if not config.get("chat_template") and (base / "chat_template.jinja").exists():
        config["chat_template"] = (base / "chat_template.jinja").read_text(encoding="utf-8")
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def model_folder(base: Path | str) -> Path:
    """A local model folder as is; a hub id's snapshot folder in the Hugging Face cache, downloaded
    if it is not there (huggingface_hub's public API, not mlx-lm's private `_download`)."""
    if Path(base).exists():
        return Path(base)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(base), allow_patterns=list(HUB_FILES)))


def fuse_to_folder(base: Path | str, adapters: Path, out: Path, dtype: str = "float16") -> Path:
    """Write `out` (config.json, model.safetensors, tokenizer files) and return it."""
    mx = import_mlx()
    from mlx_lm.utils import load_config, save_config

    base_dir = model_folder(base)
    model = fused_model(base_dir, adapters)
    out.mkdir(parents=True, exist_ok=True)
    target = getattr(mx, dtype)
    weights = {
        k: v.astype(target) if mx.issubdtype(v.dtype, mx.floating) else v
        for k, v in flat_parameters(model.parameters())
    }
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "pt"})
    config = load_config(base_dir)
    for key in ("quantization", "quantization_config"):
        config.pop(key, None)
    config["torch_dtype"] = dtype
    save_config(config, out / "config.json")
    copy_tokenizer(base_dir, out)
    return out
