"""LLM fan-out through litellm against the fake OpenAI server (real HTTP on 127.0.0.1).

For each scenario (concurrency C, N calls, server latency L) it prints the ideal wall time
N / C * L, the engine's wall time, their ratio (1.0 = no client overhead) and the client's CPU
per call (process CPU time of the client process during the run, every thread counted: far
less sensitive to a shared machine than wall time). Each measurement runs in a fresh process
with a real DuckDB store, as a step does: every reply is committed to the "llm" item cache.
The server runs in a process of its own, so its CPU is neither counted nor competing for the
client's GIL; it reports its own CPU per call at the end.

--baseline PATH measures another checkout of the engine (e.g. the main branch) in the same run,
against the same server, so the two sides are compared on the same machine state. --repeat N
measures each scenario N times, the engines taking turns, and ends with each one's median: on a
shared 2-core machine one run's CPU per call moves by +-0.3 ms with what else runs, far more
than most changes to the client, so compare medians of runs that took turns. The "raw http"
row is a bare aiohttp client (no litellm, no store) on the same server: the ratio that the
server, the machine and its load leave at best.

Run: .venv/bin/python benchmarks/llm_throughput.py [--baseline /path/to/other/checkout]
     [--scenarios 20:500,100:1000] [--latency 1.0] [--no-cache] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAW = Path("raw http")  # stands for the bare aiohttp reference among the engines measured


@contextlib.contextmanager
def server(latency: float) -> Iterator[tuple[str, list[str]]]:
    """The fake server in its own process: (base_url, lines it printed when stopped)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakes.openai_server", "--latency", str(latency)],
        cwd=ROOT / "tests",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    report: list[str] = []
    try:
        yield proc.stdout.readline().strip(), report
    finally:
        out, _ = proc.communicate("", timeout=30)
        report.append(out.strip())


def measure(root: Path, url: str, calls: int, concurrency: int, latency: float, model: str, cache: bool) -> dict:
    """One measurement in a fresh interpreter importing the engine from `root`."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(root),
        "--url",
        url,
        "--calls",
        str(calls),
        "--concurrency",
        str(concurrency),
        "--latency",
        str(latency),
        "--model",
        model,
    ]
    if not cache:
        command.append("--no-cache")
    if root == RAW:
        command.append("--raw")
    env = {**os.environ, "PYTHONPATH": str(root), "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "sk-bench")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"measurement failed ({root}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def raw_worker(args: argparse.Namespace) -> None:
    """The reference: the same requests through a bare aiohttp session, nothing else."""
    import asyncio

    import aiohttp

    async def fan_out() -> int:
        slots = asyncio.Semaphore(args.concurrency)
        body = {"model": args.model.split("/")[-1], "max_tokens": 16}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> bool:
                async with slots:
                    messages = [{"role": "user", "content": f"call {i}"}]
                    async with session.post(f"{args.url}/chat/completions", json={**body, "messages": messages}) as r:
                        return bool((await r.json())["choices"][0]["message"]["content"])

            return sum(await asyncio.gather(*(one(i) for i in range(args.calls))))

    cpu, started = time.process_time(), time.perf_counter()
    ok = asyncio.run(fan_out())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu_per_call_ms": cpu / args.calls * 1000, "ok": ok, "stored": None}))


def worker(args: argparse.Namespace) -> None:
    """The client side of one measurement (this process imports the engine under test)."""
    sys.path.insert(0, args.worker)
    from engine.llm.client import LLMClient, LLMRequest
    from engine.llm.providers import load_litellm
    from engine.pipeline.store import Store
    from engine.recipe.shared import LLMParams

    load_litellm()  # import cost is paid once per process; keep it out of the timing
    params = LLMParams(
        model=args.model,
        api_base=args.url,
        temperature=0.0,
        max_tokens=16,
        max_concurrency=args.concurrency,
        requests_per_minute=0,
        timeout=30,
        retries=3,
        reask=0,
    )
    tag = f"{time.time_ns()}"  # nothing of an earlier measurement is a cache hit
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store.duckdb") as store:
        cache = store.item_cache("llm") if not args.no_cache else None
        LLMClient(params, cache).run_many([LLMRequest("warm", [{"role": "user", "content": f"warm {tag}"}])])
        requests = [LLMRequest(str(i), [{"role": "user", "content": f"call {i} {tag}"}]) for i in range(args.calls)]
        client = LLMClient(params, cache)
        cpu, started = time.process_time(), time.perf_counter()
        results = client.run_many(requests)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        stored = len(cache) if cache is not None else None
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu_per_call_ms": cpu / args.calls * 1000,
                "ok": sum(r.ok for r in results),
                "stored": stored,
                "tokens": client.metrics["tokens"],
                "cost": client.metrics["cost"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="20:500,100:1000", help="concurrency:calls, comma-separated")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the server takes per call")
    parser.add_argument("--baseline", type=Path, help="another checkout of the engine to measure beside this one")
    parser.add_argument("--no-cache", action="store_true", help="no item cache (replies not committed)")
    # a model litellm knows, so each call is priced the way a real run prices it (the fake
    # server answers; litellm's bundled cost map prices it, offline)
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    parser.add_argument("--no-raw", action="store_true", help="skip the bare aiohttp reference")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario, engines taking turns")
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return raw_worker(args) if args.raw else worker(args)

    engines = [] if args.no_raw else [("raw http", RAW)]
    engines += [("baseline", args.baseline.resolve())] if args.baseline else []
    engines.append(("this tree", ROOT))
    scenarios = [tuple(int(x) for x in s.split(":")) for s in args.scenarios.split(",")]
    print(f"latency {args.latency:g} s, model {args.model}, item cache {'off' if args.no_cache else 'on (DuckDB)'}")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    header = f"{'engine':10} {'conc':>4} {'calls':>5} {'ideal s':>8} {'wall s':>7} {'ratio':>6} {'CPU ms/call':>11}"
    print(header + "  ok/stored")
    runs: dict[tuple[str, int, int], list[dict]] = {}
    with server(args.latency) as (url, report):
        for concurrency, calls in scenarios:
            ideal = calls / concurrency * args.latency
            for _ in range(max(1, args.repeat)):
                for name, root in engines:
                    m = measure(root, url, calls, concurrency, args.latency, args.model, not args.no_cache)
                    runs.setdefault((name, concurrency, calls), []).append(m)
                    print(
                        f"{name:10} {concurrency:>4} {calls:>5} {ideal:>8.2f} {m['wall']:>7.2f} "
                        f"{ideal / m['wall']:>6.2f} {m['cpu_per_call_ms']:>11.2f}  {m['ok']}/{m['stored']}"
                        + (f"  tokens={m['tokens']} cost=${m['cost']:.6f}" if "cost" in m else ""),
                        flush=True,
                    )
    if args.repeat > 1:
        print(f"medians of {args.repeat} runs:")
        for (name, concurrency, calls), measured in runs.items():
            ideal = calls / concurrency * args.latency
            wall = statistics.median(m["wall"] for m in measured)
            cpu = statistics.median(m["cpu_per_call_ms"] for m in measured)
            print(f"{name:10} {concurrency:>4} {calls:>5} {ideal:>8.2f} {wall:>7.2f} {ideal / wall:>6.2f} {cpu:>11.2f}")
    print(f"server: {report[0]}  ({'; '.join(str(r) for _, r in engines)})")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
