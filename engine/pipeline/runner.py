"""Running a recipe: plan, execute what is missing, assemble the self-contained run folder."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import StepFailed, StoreDamaged, is_interrupt
from engine.pipeline.logs import run_log
from engine.pipeline.plan import Plan, PlannedStep, make_plan
from engine.pipeline.progress import working
from engine.pipeline.recipes import load_recipe
from engine.pipeline.run_folder import RunFolder
from engine.pipeline.store import Store, table_name
from engine.recipe.shared import RecipeBase as Recipe
from engine.redact import redact_row
from engine.steps.base import RunOptions, StepContext

DEFAULT_OPTIONS = RunOptions()  # frozen, so one shared default is safe

log = logging.getLogger("engine.pipeline.runner")


@dataclass(frozen=True)
class Paths:
    """Where a run's outputs go; every path can be overridden, none is hashed."""

    runs_dir: Path
    store: Path

    @property
    def artifacts(self) -> Path:
        return self.store.parent / "artifacts"

    @property
    def models(self) -> Path:
        return Path(os.environ.get("RECIPE_MODEL_CACHE") or self.runs_dir / "models")

    @classmethod
    def resolve(cls, store: str | Path | None = None, runs_dir: str | Path | None = None) -> Paths:
        runs = Path(runs_dir or os.environ.get("RECIPE_RUNS") or "runs")  # cli.RunRef spells it too
        store_path = Path(store or os.environ.get("RECIPE_STORE") or runs / "store.duckdb")
        return cls(runs, store_path)


@dataclass
class StepOutcome:
    name: str
    key: str
    status: str  # cached | ran | failed
    rows: int = 0
    seconds: float = 0.0


@dataclass
class RunResult:
    run_dir: Path
    run_hash: str
    status: str
    steps: list[StepOutcome] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # step -> rows with status 'failed'
    recipe_path: str = ""

    @property
    def executed(self) -> list[str]:
        return [s.name for s in self.steps if s.status == "ran"]

    @property
    def retry_command(self) -> str:
        """What re-asks the failed items (pasteable: a path with spaces stays one argument)."""
        return f"recipe run {shlex.quote(self.recipe_path)} --retry-failed"

    def failed_summary(self, retry_command: str | None = None) -> str | None:
        """One line for the end of a run that left failed items, or None; the CLI passes the
        command spelled with the options it was given (--until, --store, --runs-dir)."""
        if not self.failed:
            return None
        per_step = ", ".join(f"{step} {n}" for step, n in self.failed.items())
        command = retry_command or self.retry_command
        return f"{sum(self.failed.values())} failed item(s) ({per_step}); retry them with: {command}"


def plan_recipe(
    recipe_path: str | Path,
    paths: Paths | None = None,
    until: str | None = None,
    force: tuple[str, ...] = (),
    options: RunOptions = DEFAULT_OPTIONS,
) -> Plan:
    """Key every step and say which are cached, without running anything."""
    paths = paths or Paths.resolve()
    recipe = load_recipe(recipe_path)
    with Store(paths.store) as store:
        return _plan(recipe, store, paths, until, force, options)


def _plan(
    recipe: Recipe, store: Store, paths: Paths, until: str | None, force: tuple[str, ...], options: RunOptions
) -> Plan:
    def context_for(name: str) -> StepContext:
        return _context(True, name, recipe, store, paths, options)

    # keying reads what steps depend on: a channel's listing, a model's bytes (minutes, the first time)
    with working("plan: still keying the steps", last_line=False):
        plan = make_plan(recipe, store, context_for, until=until, force=force)
    return _with_failed_rows(plan, store, options.retry_failed)


def _with_failed_rows(plan: Plan, store: Store, retry: bool) -> Plan:
    """Each cached step that opts in (RETRY_FAILED_ROWS) carries its failed-row count, so a plan
    shows what --retry-failed would ask again. With --retry-failed such a step runs again under
    the same key, since its inputs did not change, only the luck of its calls: its finished items
    come back from the item caches and only the failed ones are asked again. Steps after it rerun
    only if its table comes out different (see _execute_plan)."""
    steps = []
    for step in plan.steps:
        failed = failed_rows(store, step.key) if step.cached and getattr(step.module, "RETRY_FAILED_ROWS", False) else 0
        if failed:
            step = dataclasses.replace(step, failed=failed, cached=step.cached and not retry)
        steps.append(step)
    return dataclasses.replace(plan, steps=tuple(steps))


def failed_rows(store: Store, key: str) -> int:
    """Rows of a step's table with status 'failed' (0 for tables without a status)."""
    table = store.table(key)
    if "status" not in table.columns():
        return 0
    return int(table.sql("SELECT count(*) AS n FROM {t} WHERE status = 'failed'")[0]["n"])


def _content_digest(store: Store, key: str) -> str | None:
    """A digest of a step table's rows in any order; None when the step has no table yet."""
    if not store.has(key):
        return None
    row = store.table(key).sql(
        "SELECT md5(coalesce(string_agg(CAST(t AS VARCHAR), chr(10) ORDER BY CAST(t AS VARCHAR)), '')) AS d "
        "FROM {t} AS t"
    )
    return str(row[0]["d"])


def run_recipe(
    recipe_path: str | Path,
    paths: Paths | None = None,
    until: str | None = None,
    force: tuple[str, ...] = (),
    options: RunOptions = DEFAULT_OPTIONS,
    wait: bool = False,
) -> RunResult:
    """Run every step of the recipe whose table is missing; returns what happened."""
    paths = paths or Paths.resolve()
    recipe = load_recipe(recipe_path)
    with Store(paths.store, wait=wait) as store:
        plan = _plan(recipe, store, paths, until, force, options)
        folder = RunFolder(paths.runs_dir / plan.run_id)
        folder.start(Path(recipe_path), plan, str(paths.store))
        with run_log(folder.path / "run.log"):
            try:
                return _execute_plan(plan, store, folder, paths, options)
            except StoreDamaged as e:  # found reading a cached table: the folder says so
                if folder.manifest.get("status") == "running":
                    folder.run_failed(e)
                raise


def _execute_plan(plan: Plan, store: Store, folder: RunFolder, paths: Paths, options: RunOptions) -> RunResult:
    result = RunResult(folder.path, plan.run_hash, "running", recipe_path=folder.manifest["recipe_path"])
    log.info("run %s: %d steps, %d cached", plan.run_id, len(plan.steps), sum(s.cached for s in plan.steps))
    # Steps rerun under their old key (--retry-failed) whose rows came out different: a step
    # after one of them is stale even though its key, and so its cached table, is the same.
    changed: set[str] = set()
    for step in plan.steps:
        if step.cached and not changed.intersection(step.upstream):
            result.steps.append(StepOutcome(step.name, step.key, "cached", store.table(step.key).count()))
            folder.step_done(step, "cached", result.steps[-1].rows, 0.0)
            continue
        before = _content_digest(store, step.key)
        result.steps.append(_execute_step(step, plan, store, folder, paths, options))
        if before is not None and _content_digest(store, step.key) != before:
            changed.add(step.name)
    result.failed = {s.name: n for s in plan.steps if (n := failed_rows(store, s.key))}
    folder.finish(plan, store, paths.artifacts)
    if result.executed or not (folder.path / "report.html").is_file():
        _refresh_report(folder.path)  # ~1 s (matplotlib): only when there is something new to show
    result.status = "complete"
    # run.log records the end; the console's last line is the caller's (the CLI prints
    # `complete: <folder> (...)`), so at INFO the console said it twice
    log.debug("run %s complete: %s", plan.run_id, folder.path)
    return result


def _refresh_report(run_dir: Path) -> None:
    """Write report.html once the manifest says complete: only now are all of its parts final.

    Also after a fully cached run whose folder has none yet (a new runs dir over the same store).
    """
    from engine.inspect.report import write_report

    try:
        write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - a report problem never fails a finished run
        log.warning("report.html could not be written: %s (try `recipe report %s`)", e, run_dir.name)


def _execute_step(
    step: PlannedStep, plan: Plan, store: Store, folder: RunFolder, paths: Paths, options: RunOptions
) -> StepOutcome:
    folder.step_started(step)
    ctx = _context(
        False,
        step.name,
        plan.recipe,
        store,
        paths,
        options,
        key=step.key,
        run_dir=folder.path,
        fingerprint=step.fingerprint,
    )
    ctx.upstream_dirs = {dep: paths.artifacts / table_name(dep, key) for dep, key in step.upstream.items()}
    inputs = {dep: store.table(key) for dep, key in step.upstream.items()}
    log.info("%s: running (%s)", step.name, step.key[:16])
    started = time.perf_counter()
    try:
        # reasons quote library and provider errors: scrubbed of secrets before they are stored
        with working(f"{step.name}: still running", last_line=False):  # a step's phases without a bar
            rows = [redact_row(row) for row in step.module.run(ctx, inputs, step.config) or []]
        _publish_artifacts(ctx.work_dir, paths.artifacts / table_name(step.name, step.key))
        seconds = time.perf_counter() - started
        meta = {"config": step.config, "upstream": step.upstream, "seconds": seconds, "metrics": ctx.metrics}
        store.write_step(step.name, step.key, step.module.COLUMNS, rows, meta)
    except BaseException as e:  # recorded, then re-raised: KeyboardInterrupt too
        log.debug("%s failed:\n%s", step.name, traceback.format_exc())
        folder.step_failed(step, e)
        if is_interrupt(e) and not isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt from e  # DuckDB's "Query interrupted" is a Ctrl-C, not a failure
        if isinstance(e, Exception) and not isinstance(e, StoreDamaged):  # its own message says what to do
            raise StepFailed(step.name, step.key, e, folder.manifest["recipe_path"], plan.run_id) from e
        raise
    log.info("%s: %d rows in %.1fs", step.name, len(rows), seconds)
    folder.step_done(step, "ran", len(rows), seconds)
    return StepOutcome(step.name, step.key, "ran", len(rows), seconds)


def _context(
    plan_ctx: bool,
    name: str,
    recipe: Recipe,
    store: Store,
    paths: Paths,
    options: RunOptions,
    key: str = "",
    run_dir: Path | None = None,
    fingerprint: Any = None,
) -> StepContext:
    """A step's context; planning gets one too (fingerprints may use item caches)."""
    work_dir = paths.artifacts / (f".plan-{name}" if plan_ctx else f".tmp-{name}-{key[:16]}-{os.getpid()}")
    if not plan_ctx:  # planning only reads; a running step gets a fresh, empty folder
        _clear_killed_attempts(paths.artifacts, f".tmp-{name}-{key[:16]}-")
        work_dir.mkdir(parents=True)
    return StepContext(
        step=name,
        key=key,
        store=store,
        work_dir=work_dir,
        base_dir=recipe.base_dir,
        run_dir=run_dir or paths.runs_dir,
        models_dir=paths.models,
        options=options,
        fingerprint=fingerprint,
        log=logging.getLogger(f"engine.steps.{name}"),
    )


def _clear_killed_attempts(artifacts: Path, prefix: str) -> None:
    """Remove the work folders of earlier attempts at this step whose process is gone.

    They carry the pid so two stores sharing a runs folder never share one; an attempt that
    was killed leaves its folder behind, and nothing half-written is ever trusted.
    """
    for leftover in artifacts.glob(prefix + "*"):
        pid = leftover.name[len(prefix) :]
        if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _publish_artifacts(work_dir: Path, final: Path) -> None:
    """Move a step's files to their content-addressed home (replacing a half-done one)."""
    if not any(work_dir.iterdir()):
        shutil.rmtree(work_dir)
        return
    if final.exists():
        shutil.rmtree(final)
    work_dir.rename(final)
