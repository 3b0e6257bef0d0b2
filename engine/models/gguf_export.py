"""Write a llama-family HF folder as GGUF with the `gguf` package (F32, F16 or Q8_0).

`mlx_lm.fuse --export-gguf` writes tokenizer.ggml.model="llama" with no merges and no chat
template, which breaks BPE models (SmolLM, Llama 3, Qwen): FACTS.md. Here the tokenizer metadata
comes from tokenizer.json: byte-level BPE -> "gpt2" with merges and a pre-tokenizer name;
SentencePiece-style BPE (byte fallback) -> "llama" with scores; control tokens typed as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import RecipeError, UnsupportedArchitecture
from engine.models.blas import import_mlx

SUPPORTED = ("llama", "mistral")
_LAYER = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 3, 4, 5, 6


def gguf_name(hf: str) -> str | None:
    base, _, leaf = hf.rpartition(".")
    if base in _TOP:
        return f"{_TOP[base]}.{leaf}"
    parts = base.split(".")
    if len(parts) >= 4 and parts[:2] == ["model", "layers"] and ".".join(parts[3:]) in _LAYER:
        return f"blk.{parts[2]}.{_LAYER['.'.join(parts[3:])]}.{leaf}"
    return None


def permute(w: Any, n_head: int) -> Any:
    """HF half-split rope rows -> llama.cpp's interleaved layout (inverse of gguf_import.unpermute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _load_weights(folder: Path) -> dict[str, Any]:
    import numpy as np

    mx = import_mlx()
    weights: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        for k, v in mx.load(str(file)).items():
            weights[k] = np.array(v.astype(mx.float32))
    return weights


def _tokenizer_json(folder: Path) -> dict:
    path = folder / "tokenizer.json"
    if not path.exists():
        raise RecipeError(f"GGUF export needs {path} (a fast tokenizer); none found")
    return json.loads(path.read_text(encoding="utf-8"))


def _pre_name(pre: dict | None) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE, recognised from tokenizer.json."""
    parts = (pre or {}).get("pretokenizers") or ([pre] if pre else [])
    if any(p.get("type") == "Digits" and p.get("individual_digits") for p in parts):
        return "smollm"
    if any(p.get("type") == "Split" and "\\p{N}{1,3}" in json.dumps(p.get("pattern", {})) for p in parts):
        return "llama-bpe"
    return "gpt-2"  # llama.cpp spells the GPT-2 regex this way


def vocab_metadata(tok: dict, vocab_size: int) -> dict[str, Any]:
    """tokens, token types, merges or scores, model and pre names from a tokenizer.json."""
    model = tok["model"]
    if model.get("type") != "BPE":
        raise RecipeError(f"GGUF export supports BPE tokenizers only (found {model.get('type')})")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    for text, i in model["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = text, NORMAL
    for added in tok.get("added_tokens", []):
        if added["id"] < vocab_size:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if model.get("byte_fallback"):  # SentencePiece-style: scores rank the merges
        rank = {m.replace(" ", ""): r for r, m in enumerate(merges)}
        pairs = list(zip(tokens, types, strict=True))
        scores = [-float(rank.get(t, len(merges))) if ty == NORMAL else 0.0 for t, ty in pairs]
        types = [BYTE if t.startswith("<0x") and len(t) == 6 and ty == NORMAL else ty for t, ty in pairs]
        return {"model": "llama", "pre": "default", "tokens": tokens, "types": types, "scores": scores}
    return {
        "model": "gpt2",
        "pre": _pre_name(tok.get("pre_tokenizer")),
        "tokens": tokens,
        "types": types,
        "merges": merges,
    }


def _special_ids(folder: Path, tokens: list[str]) -> dict[str, Any]:
    config = (
        json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if (folder / "tokenizer_config.json").exists()
        else {}
    )
    index = {t: i for i, t in enumerate(tokens)}

    def token_id(key: str) -> int | None:
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        return index.get(value) if value else None

    template = config.get("chat_template")
    if not template and (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return {
        "bos": token_id("bos_token"),
        "eos": token_id("eos_token"),
        "unk": token_id("unk_token"),
        "pad": token_id("pad_token"),
        "add_bos": bool(config.get("add_bos_token", False)),
        "chat_template": template if isinstance(template, str) else None,
    }


def _add_tokenizer(writer: Any, folder: Path, vocab_size: int) -> None:
    meta = vocab_metadata(_tokenizer_json(folder), vocab_size)
    writer.add_tokenizer_model(meta["model"])
    writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["types"])
    if "merges" in meta:
        writer.add_token_merges(meta["merges"])
    if "scores" in meta:
        writer.add_token_scores(meta["scores"])
    special = _special_ids(folder, meta["tokens"])
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("unk", writer.add_unk_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if special[key] is not None:
            add(special[key])
    writer.add_add_bos_token(special["add_bos"])
    if special["chat_template"]:
        writer.add_chat_template(special["chat_template"])


def _add_general(writer: Any, general: dict[str, Any]) -> None:
    """Descriptive `general.*` keys (name, license, base model, ...), typed by their values."""
    for key, value in general.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_string(key, str(value))


def _add_params(writer: Any, config: dict, file_type: int) -> None:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_file_type(file_type)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config["vocab_size"])


def _encode(data: Any, kind: str) -> tuple[Any, Any]:
    """(array, raw_dtype) for one tensor: norms and odd shapes stay F32, matrices follow `kind`."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if data.ndim < 2 or kind == "f32":
        return data.astype(np.float32), None
    if kind == "q8_0" and data.shape[-1] % 32 == 0:
        return quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


def export_gguf(
    folder: Path, out: Path, kind: str = "q8_0", name: str | None = None, general: dict[str, Any] | None = None
) -> Path:
    """Write `out` from the HF folder `folder` (config.json, *.safetensors, tokenizer.json).
    `general`: descriptive keys (base_metadata.finetune_general); `name` fills general.name if absent."""
    import gguf

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = config.get("model_type")
    if arch not in SUPPORTED:
        raise UnsupportedArchitecture(
            f"GGUF export supports llama-family models ({', '.join(SUPPORTED)}); this model is {arch!r}. "
            "The fused HF folder model/ is still written: convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[kind]
    writer = gguf.GGUFWriter(str(out), "llama")
    _add_general(writer, {"general.name": name or folder.name, **(general or {})})
    _add_params(writer, config, int(file_type))
    _add_tokenizer(writer, folder, config["vocab_size"])
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    for hf, data in _load_weights(folder).items():
        target = gguf_name(hf)
        if target is None:
            raise RecipeError(f"GGUF export: tensor {hf} has no llama GGUF name")
        if target == "output.weight" and config.get("tie_word_embeddings", False):
            continue
        if ".attn_q." in target:
            data = permute(data, heads)
        elif ".attn_k." in target:
            data = permute(data, kv_heads)
        array, raw = _encode(data, kind)
        writer.add_tensor(target, array, raw_dtype=raw)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
