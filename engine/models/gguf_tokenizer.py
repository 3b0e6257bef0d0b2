"""Rebuild a Hugging Face `tokenizer.json` (+ tokenizer_config.json) from GGUF tokenizer metadata.

GGUF keeps the vocabulary, merges (BPE) or scores (SentencePiece), token types and the chat
template; the `tokenizers` package turns them back into a fast tokenizer that mlx-lm and
transformers load. Token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import RecipeError

CONTROL, USER_DEFINED = 3, 4
# Llama 3's pre-tokenizer split (GGUF pre "llama-bpe"); GPT-2's own regex is ByteLevel's default.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _bpe_tokenizer(meta: dict[str, Any]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    pre = meta.get("tokenizer.ggml.pre", "default")
    tok = Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=pre == "llama-bpe")
    )
    if pre == "smollm":  # SmolLM splits digits one by one before the GPT-2 byte-level regex
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif pre == "llama-bpe":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece BPE vocab: every split of a piece into two pieces,
    ranked by the merged piece's score (higher score = earlier merge)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    found = []
    for piece, pid in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                found.append((-scores[pid], vocab[left], vocab[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _spm_tokenizer(meta: dict[str, Any]):
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    tok = Tokenizer(
        models.BPE(
            vocab={t: i for i, t in enumerate(tokens)},
            merges=_spm_merges(tokens, scores),
            unk_token=tokens[int(unk)] if unk is not None else None,
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    tok.normalizer = normalizers.Sequence(
        ([normalizers.Prepend("▁")] if prefix else []) + [normalizers.Replace(" ", "▁")]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        + ([decoders.Strip(" ", 1, 0)] if prefix else [])
    )
    return tok


def build_tokenizer(meta: dict[str, Any]):
    """A `tokenizers.Tokenizer` equivalent to the GGUF's tokenizer."""
    from tokenizers import AddedToken

    kind = meta.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tok = _bpe_tokenizer(meta)
    elif kind == "llama":
        tok = _spm_tokenizer(meta)
    else:
        raise RecipeError(f"GGUF tokenizer model {kind!r} is not supported (gpt2 BPE and llama SentencePiece are)")
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    typed = list(zip(tokens, types, strict=True))  # GGUF gives one type per token
    special = [AddedToken(t, special=True, normalized=False) for t, k in typed if k == CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, k in typed if k == USER_DEFINED]
    tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    return tok


def adds_bos(meta: dict[str, Any]) -> bool:
    """Whether the tokenizer prepends BOS; without the key, llama.cpp's default (SentencePiece only)."""
    return bool(meta.get("tokenizer.ggml.add_bos_token", meta.get("tokenizer.ggml.model") == "llama"))


def tokenizer_config(meta: dict[str, Any]) -> dict[str, Any]:
    tokens = meta["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(value)] if value is not None and int(value) < len(tokens) else None

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": adds_bos(meta),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{meta.get('general.architecture')}.context_length", 2048)),
    }
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config


def write_tokenizer(meta: dict[str, Any], out: Path) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out`."""
    tok = build_tokenizer(meta)
    if meta.get("tokenizer.ggml.model") == "llama" and adds_bos(meta):
        from tokenizers import processors

        bos = meta["tokenizer.ggml.tokens"][int(meta.get("tokenizer.ggml.bos_token_id", 1))]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, int(meta.get("tokenizer.ggml.bos_token_id", 1)))],
        )
    tok.save(str(out / "tokenizer.json"))
    config = tokenizer_config(meta)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {k: v for k, v in config.items() if k.endswith("_token") and v is not None}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
