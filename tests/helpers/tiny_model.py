"""A tiny llama model folder built in code, with a real BPE tokenizer trained by `tokenizers`.

2 layers, hidden 64, vocab ~400: small enough that loading, training a few LoRA steps and
generating take well under a second on CPU, while every code path (chat template, special
tokens, byte-level BPE merges, safetensors layout) is the real one a hub model would use.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 400

# A corpus with the words the tests' datasets use, so the BPE learns real merges.
_CORPUS_LINES = [
    "Fasting lowers insulin and lets the body burn stored fat.",
    "Breakfast is not the most important meal of the day for everyone.",
    "Hunger comes in waves and passes if you drink water or tea.",
    "Insulin is a hormone that tells the body to store energy.",
    "What is fasting? Why do I get hungry? Is it bad to skip breakfast?",
    "The answer is simple: eat real food, less often, and sleep well.",
    "user assistant system You are a helpful doctor. Answer in your own voice.",
    "0 1 2 3 4 5 6 7 8 9 10 12 16 24 36 48 hours minutes days weeks",
]


def tiny_corpus() -> list[str]:
    return [line for _ in range(20) for line in _CORPUS_LINES]


def train_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2 style, like SmolLM/Llama 3) trained on the corpus above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    return tok


SPM_SPECIALS = ["<unk>", "<s>", "</s>"]
SPM_TEMPLATE = (
    "{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def train_spm_tokenizer(vocab_size: int = 300):
    """A SentencePiece-style BPE like Llama 2's tokenizer.json: "▁" for spaces, <0xNN> byte
    fallback tokens, <s> prepended. Trained with a Metaspace split so merges stay inside words."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer_tok.train_from_iterator(
        tiny_corpus(), trainer=trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    )
    learned = json.loads(trainer_tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(SPM_SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
    for token in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPM_SPECIALS])
    return tok


def tiny_config(vocab_size: int) -> dict:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 1024,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }


def write_spm_tokenizer_files(tok, path: Path) -> None:
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "chat_template": SPM_TEMPLATE,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def write_tokenizer_files(tok, path: Path) -> None:
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "model_max_length": 1024,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")


def make_tiny_llama(path: Path, seed: int = 0, tokenizer: str = "bpe") -> Path:
    """Write a loadable tiny llama folder at `path` (created if missing) and return it.

    tokenizer: "bpe" (byte-level, ChatML template, like SmolLM2) or "spm" (SentencePiece-style)."""
    from engine.models.blas import import_mlx

    mx = import_mlx()
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer() if tokenizer == "bpe" else train_spm_tokenizer()
    config = tiny_config(tok.get_vocab_size())
    if tokenizer == "spm":
        config.update(bos_token_id=1, eos_token_id=2)
    eos = "<|im_end|>" if tokenizer == "bpe" else "</s>"
    assert tok.token_to_id(eos) == config["eos_token_id"]
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (write_tokenizer_files if tokenizer == "bpe" else write_spm_tokenizer_files)(tok, path)
    return path
