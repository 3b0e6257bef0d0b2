"""`recipe` command line: thin wrappers over the library (engine.run, engine.runs, ...)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from engine.errors import RecipeError, RecipeInvalid

EPILOG_RUN = "Example: recipe run recipes/demo.yaml --until split"


def friendly_errors(fn: Callable) -> Callable:
    """Users see the message and exit 1; --debug (or RECIPE_DEBUG=1) shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RecipeError as e:
            if click.get_current_context().obj.get("debug"):
                raise
            click.echo(str(e) if isinstance(e, RecipeInvalid) else f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; finished steps are kept, run the same command to resume", err=True)
            sys.exit(130)

    return wrapper


store_option = click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="DuckDB store (default runs/store.duckdb, or $RECIPE_STORE).")
runs_option = click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                           help="Folder of run folders (default runs/, or $RECIPE_RUNS).")


@click.group(epilog="Example: recipe run recipes/demo.yaml")
@click.option("--debug", is_flag=True, envvar="RECIPE_DEBUG", help="Show tracebacks and debug logs.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="recipe")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Turn a creator's videos into a local model that answers in their voice."""
    from engine.logs import setup_console

    ctx.obj = {"debug": debug, "quiet": quiet}
    setup_console(debug=debug, quiet=quiet)


@main.command(epilog="Example: recipe validate recipes/jason_fung.yaml")
@click.argument("recipe", type=click.Path(path_type=Path))
@friendly_errors
def validate(recipe: Path) -> None:
    """Check a recipe against the schema; print every problem with its line."""
    from engine.recipe import load_recipe

    loaded = load_recipe(recipe)
    click.echo(f"{recipe}: ok ({loaded.name}, {len(loaded.sources)} source(s))")


@main.command(epilog="Example: recipe plan recipes/demo.yaml")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--until", default=None, help="Plan up to this step.")
@click.option("--force", multiple=True, help="Pretend this step (and downstream) must rerun.")
@store_option
@runs_option
@friendly_errors
def plan(recipe: Path, until: str | None, force: tuple[str, ...], store: Path | None,
         runs_dir: Path | None) -> None:
    """Show each step with its key and whether it is cached or to run."""
    from engine.run import Paths, plan_recipe

    result = plan_recipe(recipe, Paths.resolve(store, runs_dir), until=until, force=force)
    for step in result.steps:
        click.echo(f"{step.name:<12} {step.key[:16]}  {step.status}")
    click.echo(f"run {result.run_id}")


@main.command(epilog=EPILOG_RUN)
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--until", default=None, help="Stop after this step (e.g. split).")
@click.option("--force", multiple=True, help="Rerun this step and everything downstream (repeatable).")
@click.option("--retry-failed", is_flag=True, help="Retry videos recorded as unavailable/members-only.")
@click.option("--wait", is_flag=True, help="If another run holds the store, wait for it.")
@store_option
@runs_option
@click.pass_context
@friendly_errors
def run(ctx: click.Context, recipe: Path, until: str | None, force: tuple[str, ...], retry_failed: bool,
        wait: bool, store: Path | None, runs_dir: Path | None) -> None:
    """Run every step whose inputs changed; write runs/<id>/."""
    from engine.run import Paths, run_recipe
    from engine.steps.base import RunOptions

    options = RunOptions(retry_failed=retry_failed, debug=ctx.obj["debug"], quiet=ctx.obj["quiet"])
    result = run_recipe(recipe, Paths.resolve(store, runs_dir), until=until, force=force,
                        options=options, wait=wait)
    ran = result.executed
    click.echo(f"{result.status}: {result.run_dir}  ({len(ran)} step(s) ran"
               f"{': ' + ', '.join(ran) if ran else ''}; {len(result.steps) - len(ran)} cached)")


@main.command(epilog="Example: recipe runs")
@runs_option
@friendly_errors
def runs(runs_dir: Path | None) -> None:
    """List run folders: id, recipe, date, status, headline metrics."""
    from engine.run import Paths
    from engine.runs import list_runs

    found = list_runs(Paths.resolve(None, runs_dir).runs_dir)
    if not found:
        click.echo("no runs yet; start one with `recipe run recipes/demo.yaml`")
    for info in found:
        numbers = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.headline.items())
        click.echo(f"{info.run_id}  {info.recipe:<16} {info.created[:19]}  {info.status:<11} {numbers}")


@main.command(epilog="Example: recipe show 3f2a9c")
@click.argument("run_ref")
@runs_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and metrics as JSON.")
@friendly_errors
def show(run_ref: str, runs_dir: Path | None, as_json: bool) -> None:
    """Show one run: steps, rows, failures by reason, metrics."""
    from engine.run import Paths
    from engine.runs import find_run
    from engine.show import render_run, run_summary

    run_dir = find_run(run_ref, Paths.resolve(None, runs_dir).runs_dir)
    summary = run_summary(run_dir)
    click.echo(json.dumps(summary, indent=2, default=str) if as_json else render_run(summary))


@main.command(epilog="Example: recipe schema > recipe.schema.json")
def schema() -> None:
    """Print the recipe JSON Schema (for editors and validators)."""
    from engine.recipe import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(encoding="utf-8"))


@main.command(epilog="Example: recipe gc --dry-run")
@click.option("--dry-run", is_flag=True, help="Only say what would be dropped.")
@store_option
@runs_option
@friendly_errors
def gc(dry_run: bool, store: Path | None, runs_dir: Path | None) -> None:
    """Drop store tables and files that no run folder references."""
    from engine.run import Paths
    from engine.runs import garbage_collect

    paths = Paths.resolve(store, runs_dir)
    result = garbage_collect(paths.store, paths.runs_dir, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"{verb} {len(result.dropped_tables)} table(s) and {len(result.removed_dirs)} artifact folder(s); "
               f"freed {result.bytes_freed / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
