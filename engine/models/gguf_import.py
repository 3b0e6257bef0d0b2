"""Convert a llama-family GGUF into a cached MLX/HF folder (float32 weights, config, tokenizer).

Q4_0/Q4_1/Q8_0 tensors come out of `mx.load` as MLX quantized triples and are dequantized by
MLX; files with other types (K-quants, ...) are read with the `gguf` package's numpy
dequantizers. llama.cpp stores attn_q/attn_k rows permuted for its interleaved rope: they are
un-permuted here so the folder is a plain HF llama (rope_traditional false) that transformers,
mlx-lm and our GGUF export all read the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from engine.errors import RecipeError
from engine.models.base_metadata import GENERAL_FILE, gguf_general
from engine.models.blas import import_mlx
from engine.pipeline.hashing import digest_file

log = logging.getLogger("engine.models")
SUPPORTED_ARCHS = ("llama",)
_LAYER_MAP = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_MAP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


# Bump when the conversion's output changes, so folders converted by an older engine are redone.
CONVERTER_VERSION = 3  # 3: the GGUF's general.* keys saved (GENERAL_FILE) for the export


def import_gguf(path: Path, models_dir: Path) -> Path:
    """The converted folder for `path`, converting on first use (keyed by content + converter)."""
    target = Path(models_dir) / f"gguf-{path.stem}-v{CONVERTER_VERSION}-{digest_file(path)[:16]}"
    if (target / "config.json").exists():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")  # concurrent converters never collide
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("converting %s into %s (once)", path.name, target)
    try:
        convert_gguf(path, tmp)
        shutil.rmtree(target, ignore_errors=True)  # a half-written folder without config.json
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: keep its copy
    return target


def _plain(value: Any) -> Any:
    """MLX/numpy metadata values -> Python scalars/lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(float32 weights by GGUF name, metadata) of a GGUF file."""
    mx = import_mlx()
    try:
        raw, meta = mx.load(str(path), return_metadata=True)
    except Exception as e:  # noqa: BLE001 - whatever MLX cannot read (e.g. K-quants) goes to the gguf package
        log.info("mx.load cannot read %s (%s); dequantizing with the gguf package", path.name, e)
        return _read_with_gguf(path)
    meta = {k: _plain(v) for k, v in meta.items()}
    weights = {}
    for name in raw:
        if name.endswith((".scales", ".biases")):
            continue
        w = raw[name]
        base = name.removesuffix(".weight")
        if f"{base}.scales" in raw:
            scales, biases = raw[f"{base}.scales"], raw[f"{base}.biases"]
            bits = w.shape[-1] * 32 // (scales.shape[-1] * 32)
            # float32 scales/biases: the result is then float32 too, not rounded to float16
            w = mx.dequantize(w, scales.astype(mx.float32), biases.astype(mx.float32), group_size=32, bits=bits)
        weights[name] = w.astype(mx.float32)
    return weights, meta


def _read_with_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    mx = import_mlx()
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(path))
    meta = {name: _plain(field.contents()) for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    weights = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            data = np.asarray(t.data, dtype=np.float32)
        else:
            data = dequantize(t.data, t.tensor_type)
        weights[t.name] = mx.array(data.reshape(shape).astype(np.float32))
    return weights, meta


def unpermute(w: Any, n_head: int) -> Any:
    """Inverse of llama.cpp's q/k row permutation (interleaved rope -> HF half-split rope)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(name: str) -> str | None:
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m and m.group(2) in _LAYER_MAP:
        return f"model.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", name)
    if m and m.group(1) in _TOP_MAP:
        return f"{_TOP_MAP[m.group(1)]}.{m.group(2)}"
    return None


def config_from_metadata(meta: dict[str, Any], has_output: bool) -> dict[str, Any]:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise RecipeError(
            f"GGUF architecture {arch!r} is not supported for import "
            f"(supported: {', '.join(SUPPORTED_ARCHS)}); use an MLX/HF folder instead"
        )

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    heads = int(get("attention.head_count"))
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": int(get("embedding_length")),
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": not has_output,
        "torch_dtype": "float32",
    }
    if get("attention.key_length") is not None:
        config["head_dim"] = int(get("attention.key_length"))
    for key in ("bos", "eos", "padding"):
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None:
            config["pad_token_id" if key == "padding" else f"{key}_token_id"] = int(value)
    return config


def convert_gguf(path: Path, out: Path) -> None:
    """Write config.json, model.safetensors and the tokenizer files for `path` into `out`."""
    mx = import_mlx()
    from engine.models.gguf_tokenizer import write_tokenizer

    weights, meta = read_gguf(path)
    config = config_from_metadata(meta, has_output="output.weight" in weights)
    converted = {}
    for name, w in weights.items():
        target = hf_name(name)
        if target is None:
            log.warning("GGUF tensor %s has no HF counterpart; skipped", name)
            continue
        if ".attn_q." in name:
            w = unpermute(w, config["num_attention_heads"])
        elif ".attn_k." in name:
            w = unpermute(w, config["num_key_value_heads"])
        converted[target] = w
    mx.save_safetensors(str(out / "model.safetensors"), converted, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    write_tokenizer(meta, out)
    (out / GENERAL_FILE).write_text(json.dumps(gguf_general(meta), indent=2), encoding="utf-8")
    (out / "source.json").write_text(
        json.dumps({"gguf": str(path), "name": meta.get("general.name")}), encoding="utf-8"
    )
