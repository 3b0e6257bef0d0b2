"""Training on several ranks: `mlx.launch` runs engine.models.train_worker once per rank.

The engine writes a job file (data paths, settings, learning rate, steps), launches, follows rank
0's progress file, and waits. mlx.launch exits 0 even when a rank fails (it only prints a
warning), so success is read from the ranks' own files instead: every rank writes
`rank<N>.done.json` as its last act, and rank 0 writes `result.json` and its adapters into
`adapters.partial/`. Only when all ranks are done is that folder renamed to its final place;
otherwise the step fails with the failing rank's last log lines (DistributedTrainingFailed).

Each rank logs to `rank<N>.log` and writes its pid to `rank<N>.pid` (how tests kill one).
Local ranks share the launcher's process group, which is killed as a whole when the engine is
interrupted, so no rank outlives the step.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from engine.errors import DistributedTrainingFailed, RecipeError
from engine.models.settings import Distributed
from engine.models.settings import TrainSettings as Train
from engine.models.train import TrainResult
from engine.models.train_worker import STOPPED_MARK

WORKER_MODULE = "engine.models.train_worker"
LOG_TAIL = 15
STOPPED_BY_LAUNCHER = "was killed by SIGTERM"  # how mlx.launch ends the other ranks
_PEER_LOST = re.compile(r"\[ring\].*(connection to a peer was lost|was closed)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # mlx-lm's progress table colours its lines
_LAUNCHER_SAYS = re.compile(r"rank (\d+) (was killed|exited with code (-?\d+))")


def settings_problems(train: Train, base_dir: Path) -> list[tuple[tuple[str, ...], str]]:
    """(recipe path, message) for `train.distributed`: exactly one of processes/hosts/hostfile, IPs
    for the ring backend's hosts, a readable hostfile, and a global batch the ranks can share."""
    dist, where = train.distributed, ("train", "distributed")
    if dist is None:
        return []
    given = [name for name in ("processes", "hosts", "hostfile") if getattr(dist, name) is not None]
    if len(given) != 1:
        found = f"found {' and '.join(given)}" if given else "none is set"
        message = f"set exactly one of processes, hosts or hostfile ({found}); e.g. processes: 2 for two local ranks"
        return [(where + ((given[-1],) if given else ()), message)]
    if dist.backend == "ring" and dist.hosts and (names := [h for h in dist.hosts if not _is_ip(h)]):
        message = (
            f"the ring backend connects to IP addresses, and {names[0]!r} is a host name; give its IP, "
            "or use a hostfile with both (ssh name and ips, see docs/scaling.md)"
        )
        return [(where + ("hosts",), message)]
    try:
        ranks = world_size(dist, base_dir)
    except RecipeError as e:
        return [(where + ("hostfile",), str(e))]
    if train.batch_size % ranks:
        example = ranks * max(1, train.batch_size // ranks)
        message = (
            f"{train.batch_size} is the global batch and must divide by the {ranks} ranks of "
            f"train.distributed; use a multiple of {ranks}, e.g. {example}"
        )
        return [(("train", "batch_size"), message)]
    return []


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def world_size(dist: Distributed, base_dir: Path) -> int:
    """How many ranks the section asks for (a hostfile is read: one rank per host entry)."""
    if dist.processes is not None:
        return dist.processes
    if dist.hosts is not None:
        return len(dist.hosts)
    if dist.hostfile is not None:
        return len(read_hostfile(hostfile_path(dist.hostfile, base_dir)))
    return 1


def hostfile_path(spec: str, base_dir: Path) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_absolute() else base_dir / path


def read_hostfile(path: Path) -> list[Any]:
    """The host entries of an mlx.launch hostfile: a JSON list, or an object with `hosts`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecipeError(f"hostfile {path}: {e}; write mlx.launch's JSON format (see docs/scaling.md)") from None
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list) or not hosts:
        raise RecipeError(f'hostfile {path}: no hosts (expected a JSON list, or {{"hosts": [...]}})')
    return hosts


def launcher() -> str:
    """mlx.launch of the running interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "mlx.launch"
    found = str(beside) if beside.exists() else shutil.which("mlx.launch")
    if not found:
        raise RecipeError("train.distributed needs mlx.launch (part of the mlx package); reinstall mlx")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_run(count: int, tries: int = 50) -> int:
    """A first port whose next `count - 1` ports are free too: the ring backend listens on
    starting port + rank, and a port the kernel just freed for one can still be held (TIME_WAIT,
    a previous trial's connection) for the next ("Couldn't bind socket", seen in CI in a sweep)."""
    for _ in range(tries):
        first = _free_port()
        if first + count <= 65535 and all(_bindable(first + i) for i in range(1, count)):
            return first
    return _free_port()


def launch_command(dist: Distributed, base_dir: Path, job: Path) -> list[str]:
    """The mlx.launch command line: where the ranks run, then the worker with its job file."""
    where: list[str] = []
    if dist.processes is not None:
        where = ["-n", str(dist.processes)]
    elif dist.hosts is not None:
        where = ["--hosts", ",".join(dist.hosts)]
    elif dist.hostfile is not None:
        where = ["--hostfile", str(hostfile_path(dist.hostfile, base_dir))]
    # A free port for this run: two runs (or test workers) on one machine never collide.
    ranks = dist.processes or len(dist.hosts or ()) or 8  # a hostfile: room for a few ranks a host
    ports = ["--starting-port", str(_free_port_run(ranks))] if dist.backend == "ring" else []
    if dist.backend == "nccl":
        ports = ["--nccl-port", str(_free_port())]
    env = [f"--env=PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    return [
        launcher(),
        "--backend",
        dist.backend,
        *where,
        *ports,
        *env,
        "--cwd",
        os.getcwd(),
        "--",
        sys.executable,
        "-m",
        WORKER_MODULE,
        str(job),
    ]


def check_backend(dist: Distributed) -> None:
    """Fail before launching when this machine cannot run the backend at all."""
    if dist.backend == "mpi" and not shutil.which("mpirun"):
        raise RecipeError("train.distributed.backend is mpi but mpirun is not on PATH; install Open MPI or use ring")
    if dist.backend == "nccl":
        from engine.models.blas import import_mlx

        if not import_mlx().cuda.is_available():
            raise RecipeError(
                "train.distributed.backend is nccl but MLX has no CUDA here; "
                'pip install ".[cuda]" (from a clone of recipe) on a Linux machine with NVIDIA GPUs, or use ring'
            )


def train_distributed(
    dist: Distributed,
    base_dir: Path,
    job_dir: Path,
    spec: dict[str, Any],
    adapter_dir: Path,
    on_report: Callable[[dict], None] | None = None,
) -> tuple[TrainResult, list[dict]]:
    """Run one training under mlx.launch; (rank 0's result, every rank's summary)."""
    check_backend(dist)
    ranks = world_size(dist, base_dir)
    if job_dir.exists():  # an earlier attempt's logs and files: never mistaken for this one's
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    job = job_dir / "job.json"
    job.write_text(json.dumps({**spec, "backend": dist.backend, "world_size": ranks}, indent=2), encoding="utf-8")
    command = launch_command(dist, base_dir, job)
    with open(job_dir / "launcher.log", "wb") as out:
        # stdin is a pipe kept open: mlx.launch forwards stdin to the ranks and spins on /dev/null
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=out, start_new_session=True)
        try:
            _follow(proc, job_dir / "progress.jsonl", on_report)
        finally:
            _stop(proc)
    summaries = _collect(job_dir, ranks)
    partial = job_dir / "adapters.partial"
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    shutil.move(str(partial), str(adapter_dir))  # a sweep trial's folder may be on another filesystem
    saved = json.loads((job_dir / "result.json").read_text(encoding="utf-8"))
    result = TrainResult(**{f.name: saved[f.name] for f in fields(TrainResult) if f.name in saved})
    return result, summaries


def _follow(proc: subprocess.Popen, progress: Path, on_report: Callable[[dict], None] | None) -> None:
    """Wait for the launcher, passing rank 0's loss reports on as they appear."""
    seen = 0
    while True:
        finished = proc.poll() is not None
        if on_report and progress.exists():
            lines = progress.read_text(encoding="utf-8").splitlines()
            complete = lines if finished else lines[:-1]  # the last line may still be being written
            for line in complete[seen:]:
                try:
                    report = json.loads(line)
                except ValueError:  # cut off by a rank killed mid-write: the failure is reported below
                    continue
                on_report(report)
            seen = max(seen, len(complete))
        if finished:
            return
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    """Kill the launcher's process group (its local ranks with it) if it is still running."""
    if proc.poll() is None:
        with _ignore_missing():
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with _ignore_missing():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdin:
        proc.stdin.close()


class _ignore_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError)


def _collect(job_dir: Path, ranks: int) -> list[dict]:
    """Every rank's summary, or DistributedTrainingFailed naming the rank that failed first."""
    done = [job_dir / f"rank{r}.done.json" for r in range(ranks)]
    if all(p.exists() for p in done) and (job_dir / "adapters.partial").is_dir():
        return [json.loads(p.read_text(encoding="utf-8")) for p in done]
    exits = _launcher_exits(job_dir / "launcher.log")  # in the order the launcher saw them end
    unfinished = [r for r, p in enumerate(done) if not p.exists()] or [0]
    failed = [r for r in exits if r in unfinished] + [r for r in unfinished if r not in exits]
    # Once one rank fails the launcher stops the others with SIGTERM (and their ring sockets
    # break): blame the first rank that ended some other way.
    culprits = [r for r in failed if exits.get(r) != STOPPED_BY_LAUNCHER and not _casualty(_log_text(job_dir, r))]
    rank = (culprits or failed)[0]
    how = exits.get(rank, "ended before finishing")
    lines = [_ANSI.sub("", line) for line in _log_text(job_dir, rank).splitlines()[-LOG_TAIL:]]
    if not lines:  # nothing of its own: the launcher's words (e.g. ssh or port errors) instead
        lines = (job_dir / "launcher.log").read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
    raise DistributedTrainingFailed(rank, ranks, how, lines, str(job_dir))


def _casualty(log: str) -> bool:
    """A rank that ended because another did: stopped by the launcher, or its ring peer vanished."""
    return STOPPED_MARK in log or bool(_PEER_LOST.search(log))


def _log_text(job_dir: Path, rank: int) -> str:
    path = job_dir / f"rank{rank}.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _launcher_exits(log: Path) -> dict[int, str]:
    """{rank: how it ended} from mlx.launch's warnings ("Node with rank 1 exited with code -9")."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    found: dict[int, str] = {}
    for rank, what, code in _LAUNCHER_SAYS.findall(text):
        found.setdefault(int(rank), _describe_exit(what, code))
    return found


def _describe_exit(what: str, code: str) -> str:
    if not code:
        return "was killed"
    number = int(code)
    if number < 0:
        try:
            return f"was killed by {signal.Signals(-number).name}"
        except ValueError:
            return f"was killed by signal {-number}"
    return f"exited with code {number}"
