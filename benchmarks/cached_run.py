"""Wall time of `recipe run` when every step is cached (target: under 2 s).

Runs the recipe once to fill a private store, then times fresh `recipe run` processes (the
whole CLI start-up included, as a user sees it).

    python benchmarks/cached_run.py [RECIPE] [--until STEP] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def recipe_cli(args: list[str], runs: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "--quiet", *args, "--runs-dir", str(runs)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "demo.yaml"))
    parser.add_argument("--until", default="transcripts")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        command = ["run", args.recipe] + (["--until", args.until] if args.until else [])
        first = recipe_cli(command, runs)
        times = [recipe_cli(command, runs) for _ in range(args.repeat)]
    print(f"first run (computes):   {first:.2f} s")
    print(
        f"cached run, {args.repeat} times:  median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s"
    )


if __name__ == "__main__":
    main()
