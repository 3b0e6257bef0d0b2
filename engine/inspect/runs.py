"""The runs folder as a whole: listing runs, finding one by id, and garbage-collecting the store."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import RecipeError
from engine.inspect.folder import read_manifest, read_metrics
from engine.inspect.verdict import run_verdict
from engine.pipeline.store import Store, StoreLock


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    path: Path
    recipe: str
    created: str
    status: str
    headline: dict[str, Any]


def effective_status(manifest: dict) -> str:
    """A 'running' manifest whose process is gone was interrupted."""
    status = manifest.get("status", "?")
    if status == "running" and not _alive(manifest.get("pid")):
        return "interrupted"
    return status


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def headline(manifest: dict, metrics: dict, verdict: str | None = None) -> dict[str, Any]:
    """The few numbers worth a column in `recipe runs`, then the verdict's short form (last: it
    is the only value with spaces)."""
    rows = {name: s.get("rows") for name, s in manifest.get("steps", {}).items()}
    train = metrics.get("train", {})
    out = {
        "videos": rows.get("transcripts"),
        "qa": rows.get("answers"),
        "examples": rows.get("split"),
        "best_val_loss": train.get("best_val_loss"),
        "kept_iteration": train.get("kept_iteration"),
        "verdict": verdict,
    }
    return {k: v for k, v in out.items() if v is not None}


def list_runs(runs_dir: Path) -> list[RunInfo]:
    found = []
    for manifest_path in sorted(runs_dir.glob("*/manifest.json")):
        manifest = read_manifest(manifest_path.parent)
        found.append(
            RunInfo(
                manifest_path.parent.name,
                manifest_path.parent,
                manifest.get("recipe", "?"),
                manifest.get("created", ""),
                effective_status(manifest),
                headline(manifest, read_metrics(manifest_path.parent), _short_verdict(manifest_path.parent)),
            )
        )
    return sorted(found, key=lambda r: r.created, reverse=True)


def _short_verdict(run_dir: Path) -> str | None:
    found = run_verdict(run_dir)
    return found.short_line if found else None


def find_run(ref: str, runs_dir: Path) -> Path:
    """A run folder from a path, a run id or a unique id prefix."""
    path = Path(ref)
    if (path / "manifest.json").is_file():
        return path
    matches = [p.parent for p in runs_dir.glob(f"{ref}*/manifest.json")]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RecipeError(f"no run '{ref}' under {runs_dir}; list runs with `recipe runs`")
    raise RecipeError(f"'{ref}' matches {len(matches)} runs; give more of the id")


@dataclass(frozen=True)
class GcResult:
    dropped_tables: list[str]
    removed_dirs: list[str]
    bytes_freed: int


def garbage_collect(store_path: Path, runs_dir: Path, dry_run: bool = False) -> GcResult:
    """Drop step tables (and their artifact folders) that no run folder references."""
    referenced = {
        s["table"] for info in list_runs(runs_dir) for s in read_manifest(info.path).get("steps", {}).values()
    }
    before = _size(store_path)
    with Store(store_path) as store:
        unused = [e for e in store.catalog() if e["table_name"] not in referenced]
        removed_dirs, dir_bytes = _remove_artifacts(store_path.parent / "artifacts", referenced, dry_run)
        if not dry_run:
            for entry in unused:
                store.drop_step(entry["key"])
            store.execute("CHECKPOINT")
    if not dry_run and unused:
        _compact(store_path)
    freed = max(0, before - _size(store_path)) + dir_bytes
    return GcResult([e["table_name"] for e in unused], removed_dirs, freed)


def _remove_artifacts(root: Path, referenced: set[str], dry_run: bool) -> tuple[list[str], int]:
    removed, freed = [], 0
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        if path.name in referenced:
            continue
        freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        removed.append(path.name)
        if not dry_run:
            shutil.rmtree(path)
    return removed, freed


def _compact(store_path: Path) -> None:
    """DuckDB reuses freed blocks but never shrinks its file: copy live tables to a new file."""
    import duckdb

    tmp = store_path.with_name(store_path.name + ".compact")
    tmp.unlink(missing_ok=True)
    lock = StoreLock(store_path)
    lock.acquire()
    try:
        con = duckdb.connect(str(tmp))
        con.execute(f"ATTACH '{store_path}' AS old (READ_ONLY)")
        (new_name,) = con.execute("SELECT current_database()").fetchone() or ("",)
        con.execute(f'COPY FROM DATABASE old TO "{new_name}"')
        con.close()
        tmp.replace(store_path)
    finally:
        lock.release()


def _size(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())
