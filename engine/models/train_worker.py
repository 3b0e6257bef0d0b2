"""One rank of a distributed training run: `python -m engine.models.train_worker JOB.json`.

Started by `mlx.launch` (engine.models.distributed), which sets MLX_RANK and the backend's
environment. The rank logs everything (its own output and native libraries') to `rank<N>.log`
beside the job file, writes its pid to `rank<N>.pid`, trains with engine.models.train (mlx-lm
averages gradients across ranks), and as its very last act writes `rank<N>.done.json`. Rank 0
also writes `result.json`, the adapters into `adapters.partial/`, and one line per loss report
to `progress.jsonl` for the engine's progress bar.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

STOPPED_MARK = "stopped by the launcher"  # engine.models.distributed looks for this phrase


def main(job_path: str) -> int:
    job_dir = Path(job_path).parent
    rank = int(os.environ.get("MLX_RANK", "0"))
    _log_to(job_dir / f"rank{rank}.log")
    (job_dir / f"rank{rank}.pid").write_text(str(os.getpid()), encoding="utf-8")
    signal.signal(signal.SIGTERM, _stopped(rank))
    try:
        _train(json.loads(Path(job_path).read_text(encoding="utf-8")), job_dir)
    except Exception as e:  # noqa: BLE001 - the message and traceback go to this rank's log, read by the engine
        traceback.print_exc()
        print(f"rank {rank} failed: {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


def _log_to(path: Path) -> None:
    """Send file descriptors 1 and 2 (Python's and native code's output) to this rank's log."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)


def _stopped(rank: int) -> Any:
    def handler(signum: int, _frame: Any) -> None:
        print(f"rank {rank}: {STOPPED_MARK} (signal {signum}): another rank failed or the run was interrupted")
        sys.stdout.flush()
        os._exit(128 + signum)

    return handler


def _train(job: dict[str, Any], job_dir: Path) -> None:
    from engine.data.jsonl import read_jsonl
    from engine.models.blas import import_mlx
    from engine.models.settings import TrainSettings
    from engine.models.train import train_adapter

    mx = import_mlx()
    group = mx.distributed.init(strict=job["world_size"] > 1, backend=job["backend"])
    rank, size = group.rank(), group.size()
    if size != job["world_size"]:
        raise RuntimeError(f"the launcher started {size} ranks, the recipe asks for {job['world_size']}")
    print(f"rank {rank} of {size} ({job['backend']}) on {socket.gethostname()}, device {mx.default_device()}")
    cfg = TrainSettings.model_validate(job["settings"])
    progress = job_dir / "progress.jsonl"

    def report(row: dict) -> None:
        # every rank logs its reports (a failed rank's last lines then say how far it got)
        print(f"rank {rank}: iteration {row['iteration']} train loss {row['loss']:.4f}", flush=True)
        if rank == 0:
            with open(progress, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    result = train_adapter(
        job["model_path"],
        read_jsonl(Path(job["train_path"])),
        read_jsonl(Path(job["valid_path"])),
        cfg,
        job_dir / "adapters.partial",
        job["learning_rate"],
        job["iters"],
        on_report=report,
    )
    if rank == 0:
        (job_dir / "result.json").write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
    _write_done(job_dir, rank, result, job["backend"])


def _write_done(job_dir: Path, rank: int, result: Any, backend: str) -> None:
    """This rank's summary; per-rank throughput is its share of the run's (all-ranks) tokens/s."""
    summary = result.summary()
    share = result.rank_tokens / summary["trained_tokens"] if summary["trained_tokens"] else 0.0
    tps = summary["tokens_per_second"]
    done = {
        "rank": rank,
        "host": socket.gethostname(),
        "backend": backend,
        "tokens": result.rank_tokens,
        "tokens_per_second": round(tps * share, 2) if tps else None,
        "wall_time_s": round(result.wall_time_s, 2),
    }
    (job_dir / f"rank{rank}.done.json").write_text(json.dumps(done), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
