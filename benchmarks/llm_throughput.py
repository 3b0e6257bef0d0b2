"""LLM client throughput against the fake OpenAI server (real HTTP on 127.0.0.1).

500 calls at concurrency 20 with 50 ms server latency; the ideal wall time is
500 / 20 * 50 ms = 1.25 s. Prints the measured time and its ratio to the ideal (1.0 = no
client overhead). By default the server runs in its own process so it does not compete with
the client for the GIL; --in-process measures both in one interpreter.

Run: .venv/bin/python benchmarks/llm_throughput.py [--calls N] [--concurrency C] [--in-process]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from engine.llm.client import LLMClient, LLMRequest  # noqa: E402
from engine.llm.providers import load_litellm  # noqa: E402
from engine.recipe.shared import LLMParams  # noqa: E402
from fakes.openai_server import FakeOpenAI  # noqa: E402


@contextlib.contextmanager
def server(latency: float, in_process: bool) -> Iterator[str]:
    if in_process:
        with FakeOpenAI(lambda body: "ok", latency=latency) as srv:
            yield srv.base_url
            print(f"server: calls={srv.calls} max_in_flight={srv.max_in_flight}")
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakes.openai_server", "--latency", str(latency)],
        cwd=ROOT / "tests",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc.stdout.readline().strip()
    finally:
        out, _ = proc.communicate("", timeout=30)
        print(f"server: {out.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--in-process", action="store_true")
    # a model litellm knows, so each call is priced the way a real run prices it (the fake
    # server answers; litellm's bundled cost map prices it, offline)
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    load_litellm()  # import cost is paid once per process; keep it out of the timing
    with server(args.latency, args.in_process) as base_url:
        params = LLMParams(
            model=args.model,
            api_base=base_url,
            temperature=0.0,
            max_tokens=16,
            max_concurrency=args.concurrency,
            requests_per_minute=0,
            timeout=30,
            retries=3,
            reask=0,
        )
        LLMClient(params).run_many([LLMRequest("warm", [{"role": "user", "content": "warm"}])])
        requests = [LLMRequest(str(i), [{"role": "user", "content": f"call {i}"}]) for i in range(args.calls)]
        started = time.perf_counter()
        client = LLMClient(params)
        results = client.run_many(requests)
        wall = time.perf_counter() - started
    ideal = args.calls / args.concurrency * args.latency
    print(
        f"calls={args.calls} ok={sum(r.ok for r in results)} concurrency={args.concurrency} "
        f"latency={args.latency * 1000:.0f}ms server={'in-process' if args.in_process else 'subprocess'}"
    )
    print(
        f"wall={wall:.2f}s ideal={ideal:.2f}s ratio={wall / ideal:.2f} "
        f"tokens={client.metrics['tokens']} cost=${client.metrics['cost']:.6f} model={args.model}"
    )


if __name__ == "__main__":
    main()
