"""The self-contained run folder `runs/<id>/`: recipe, resolved config, manifest, data, files.

The manifest is rewritten (atomically) after every step, so a killed or failed run leaves a
manifest that says which step was running or failed, and why. The folder is marked complete
only at the very end: until then its manifest says "running" (or "failed", with the error), and
its big files (data.duckdb, metrics.json) are each written under a temporary name and renamed,
so a run that stops while finishing never leaves half a file or a half-complete folder that
claims to be done.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from engine import __version__
from engine.pipeline.plan import Plan, PlannedStep
from engine.pipeline.recipes import resolved
from engine.pipeline.store import Store, table_name
from engine.redact import redact, redact_json
from engine.steps.base import column_docs, describe

TRACKED_PACKAGES = ("mlx", "mlx-lm", "litellm", "duckdb", "yt-dlp", "youtube-transcript-api", "rapidfuzz")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = redact_json(data)  # library messages in a manifest or metrics may echo a key
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version(), "recipe": __version__}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _device() -> dict[str, Any]:
    from engine.models.device import device_report  # imports mlx (~15 ms), only when a run starts

    return device_report()


class RunFolder:
    def __init__(self, path: Path):
        self.path = path
        self.manifest: dict[str, Any] = {}

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def start(self, recipe_path: Path, plan: Plan, store: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recipe_path, self.path / "recipe.yaml")
        write_json(self.path / "resolved.json", resolved(plan.recipe))
        previous = self._read_manifest()
        self.manifest = {
            "run_id": plan.run_id,
            "run_hash": plan.run_hash,
            "recipe": plan.recipe.name,
            "recipe_path": str(recipe_path),
            "store": store,
            "status": "running",  # "complete" only once finish() has written everything
            "pid": os.getpid(),
            "created": previous.get("created", now()),
            "updated": now(),
            "versions": versions(),
            "platform": f"{sys.platform}-{platform.machine()}",
            "device": _device(),  # what MLX computes on here: cpu, or the Metal/CUDA GPU
            "steps": {s.name: self._step_entry(s, previous) for s in plan.steps},
        }
        self._save()

    def _read_manifest(self) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            return manifest
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _step_entry(step: PlannedStep, previous: dict[str, Any]) -> dict[str, Any]:
        old = previous.get("steps", {}).get(step.name, {})
        entry = {
            "key": step.key,
            "table": table_name(step.name, step.key),
            "upstream": step.upstream,
            "status": "cached" if step.cached else "pending",
        }
        if step.cached and old.get("key") == step.key:
            entry.update({k: old[k] for k in ("rows", "seconds") if k in old})
        return entry

    def step_started(self, step: PlannedStep) -> None:
        self._update(step.name, status="running", started=now())

    def step_done(self, step: PlannedStep, status: str, rows: int, seconds: float) -> None:
        fields: dict[str, Any] = {"status": status, "rows": rows}
        if status == "ran":
            fields.update(seconds=round(seconds, 3), finished=now())
        self._update(step.name, **fields)

    def step_failed(self, step: PlannedStep, error: BaseException) -> None:
        # the step's own exception, not one of ours: it may quote a provider's reply verbatim
        self._update(step.name, status="failed", error=redact(f"{type(error).__name__}: {error}"))
        self.manifest.update(status="failed", failed_step=step.name)
        self._save()

    def _update(self, name: str, **fields: Any) -> None:
        self.manifest["steps"][name].update(fields)
        self.manifest["updated"] = now()
        self._save()

    def _save(self) -> None:
        write_json(self.manifest_path, self.manifest)

    def run_failed(self, error: BaseException) -> None:
        """Record a failure outside any step (e.g. the store turned out damaged) and why."""
        self.manifest.update(status="failed", error=redact(f"{type(error).__name__}: {error}"), updated=now())
        self._save()

    def finish(self, plan: Plan, store: Store, artifacts: Path) -> None:
        """Copy this run's tables, link its files and collect metrics; then mark it complete."""
        try:
            self._write_outputs(plan, store, artifacts)
        except Exception as e:
            self.run_failed(e)
            raise
        self.manifest.pop("failed_step", None)
        self.manifest.pop("error", None)
        self.manifest.update(status="complete", finished=now())
        self._save()

    def _write_outputs(self, plan: Plan, store: Store, artifacts: Path) -> None:
        write_data(self.path / "data.duckdb", plan, store)
        for step in plan.steps:
            link_tree(artifacts / table_name(step.name, step.key), self.path)
        write_json(self.path / "metrics.json", collect_metrics(plan, store))


def write_data(target: Path, plan: Plan, store: Store) -> None:
    """data.duckdb: the run's step tables under plain names, each table and column commented.

    Built and commented under a staging name, then renamed: a reader never finds the tables
    without their comments, and a kill leaves the previous file (or none).
    """
    for stale in target.parent.glob(f".{target.name}.*.staging"):  # left by a killed run (we hold the lock)
        _remove_duckdb(stale)
    staging = target.with_name(f".{target.name}.{os.getpid()}.staging")
    try:
        store.export_tables(staging, {s.name: table_name(s.name, s.key) for s in plan.steps})
        comment_tables(staging, {s.name: s.module for s in plan.steps})
    except BaseException:
        _remove_duckdb(staging)
        raise
    _wal(target).unlink(missing_ok=True)  # an old WAL next to the target would be replayed into the new file
    staging.replace(target)


def comment_tables(db: Path, modules: dict[str, ModuleType]) -> None:
    """COMMENT ON TABLE (the step's one-line docstring) and COMMENT ON COLUMN (its COLUMN_DOCS) for
    every table, so `duckdb_tables()`/`duckdb_columns()` explain the file. A column NULL in every
    row of this run says so: it is kept (every run's file has the same columns) but documented."""
    import duckdb

    with duckdb.connect(str(db)) as con:
        for name, module in modules.items():
            con.execute(f'COMMENT ON TABLE "{name}" IS {_sql_literal(describe(module))}')
            docs = column_docs(module)
            for column, text in _with_null_notes(con, name, docs).items():
                if text:
                    con.execute(f'COMMENT ON COLUMN "{name}"."{column}" IS {_sql_literal(text)}')


def _with_null_notes(con: Any, table: str, docs: dict[str, str]) -> dict[str, str]:
    """Each column's description, with a note on the columns NULL in every row (if any rows)."""
    columns = [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
        ).fetchall()
    ]
    counted = ", ".join(f'count("{c}")' for c in columns)
    rows, *filled = con.execute(f'SELECT count(*), {counted} FROM "{table}"').fetchall()[0]
    return {
        c: (f"{docs.get(c, '')} NULL in every row of this run.".strip() if rows and not n else docs.get(c, ""))
        for c, n in zip(columns, filled, strict=True)
    }


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _remove_duckdb(path: Path) -> None:
    path.unlink(missing_ok=True)
    _wal(path).unlink(missing_ok=True)


def collect_metrics(plan: Plan, store: Store) -> dict[str, Any]:
    """Each step's metrics from the catalog (cached steps keep the metrics they had)."""
    metrics: dict[str, Any] = {}
    for step in plan.steps:
        entry = store.catalog_entry(step.key) or {}
        value = json.loads(entry.get("metrics") or "{}")
        if value:
            metrics[step.name] = value
    return metrics


def link_tree(src: Path, dst: Path) -> None:
    """Mirror a step's artifact folder into the run folder with hard links (copies across devices)."""
    if not src.is_dir():
        return
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
