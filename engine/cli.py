"""`recipe` command line: thin wrappers over the library (engine.pipeline.runner, engine.inspect.runs, ...)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from engine.errors import RecipeError, RecipeInvalid, is_interrupt
from engine.redact import redact

EPILOG_RUN = "Example: recipe run recipes/demo.yaml --until split"
INTERRUPTED = "interrupted; finished steps are kept, run the same command to resume"
PROG = "recipe"  # also what click's completion variable is named after: _RECIPE_COMPLETE
# `-h` as well as `--help`; subcommands inherit the group's setting through click's context
CONTEXT = {"help_option_names": ["-h", "--help"]}
SHELLS = tuple(s for s in ("bash", "zsh", "fish", "powershell") if get_completion_class(s) is not None)


class ErrorEdge(click.Group):
    """The one place where errors meet the user, for every command of the group.

    A RecipeError prints its message (exit 1); Ctrl-C prints how to resume (exit 130); anything
    else is a bug or an environment problem: one line and how to see more (exit 1). `--debug`
    (or RECIPE_DEBUG=1) lets the traceback through instead. Whatever is printed is scrubbed of
    API keys and credentials first (engine.redact), the traceback included. click's own exceptions (usage
    errors: exit 2, --help, ctx.exit) and a closed pipe pass untouched: click handles them.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The process's entry point (the console script, `python -m engine.cli`; CliRunner calls
        `main` instead). After Ctrl-C everything finished is committed and every store is
        closed (the context managers unwound on the way here), so the process leaves at once:
        the interpreter's own teardown of litellm's modules alone takes about a second."""
        try:
            return self.main(*args, **kwargs)
        except SystemExit as e:
            if e.code == 130:
                _leave_now(130)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, BrokenPipeError):
            raise
        except KeyboardInterrupt:
            click.echo(INTERRUPTED, err=True)
            ctx.exit(130)
        except Exception as e:
            if is_interrupt(e):  # Ctrl-C that a library turned into its own error (DuckDB)
                click.echo(INTERRUPTED, err=True)
                ctx.exit(130)
            if ctx.params.get("debug"):
                sys.excepthook = _print_redacted_traceback  # prints the traceback once it leaves click
                raise
            click.echo(redact(_one_line(e)), err=True)
            ctx.exit(1)


def _leave_now(code: int) -> None:
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _one_line(error: Exception) -> str:
    """What the user reads instead of a traceback."""
    if isinstance(error, RecipeInvalid):
        return str(error)  # already one located line per problem, plus the count
    if isinstance(error, RecipeError):
        return f"error: {error}"  # written for the user: it names the value and the next command
    message = " ".join(str(error).split()) or "(no message)"
    return f"error: {type(error).__name__}: {message}\nrerun with --debug for the traceback"


def _print_redacted_traceback(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """Python's own traceback print, scrubbed: a chained provider error may quote the key."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, error, tb))))


class StepName(click.Choice):
    """A step of the pipeline by name (--until, --force). A wrong one is a usage error (exit 2)
    that lists the steps, and shell completion offers them. The names come from the registry
    when first needed, so a new step needs no edit here and `recipe --help` imports no step."""

    name = "step"

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        from engine.steps import step_order

        return step_order()

    @choices.setter
    def choices(self, _value: Any) -> None:
        """click.Choice.__init__ assigns its list; ours is the registry's, read when used."""


class RunRef(click.ParamType):
    """A run: its id, a unique prefix of it, or the path of its folder. Completes the run ids
    under the --runs-dir given so far on the line (else $RECIPE_RUNS, else runs/)."""

    name = "run"

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        # Paths.resolve's rule, spelled here so a Tab press does not import the runner (~0.4 s)
        runs_dir = Path(ctx.params.get("runs_dir") or os.environ.get("RECIPE_RUNS") or "runs")
        found = _run_ids(runs_dir, incomplete)
        return found or [CompletionItem(incomplete, type="dir")]  # no id matches: a run folder's path


def _run_ids(runs_dir: Path, prefix: str) -> list[CompletionItem]:
    """Run ids starting with `prefix`, newest first, each with its recipe and date as help."""
    found = []
    for manifest in runs_dir.glob(f"{_glob_escape(prefix)}*/manifest.json"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        data = data if isinstance(data, dict) else {}
        found.append((str(data.get("created", "")), manifest.parent.name, str(data.get("recipe", "?"))))
    found.sort(reverse=True)
    return [CompletionItem(run_id, help=f"{recipe} {created[:16]}") for created, run_id, recipe in found]


def _glob_escape(text: str) -> str:
    """`text` matched literally by Path.glob (a run id never has these; a typed prefix might)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


store_option = click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="DuckDB store (default runs/store.duckdb, or $RECIPE_STORE).",
)
runs_option = click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of run folders (default runs/, or $RECIPE_RUNS).",
)


@click.group(cls=ErrorEdge, context_settings=CONTEXT, epilog="Example: recipe run recipes/demo.yaml")
@click.option("--debug", is_flag=True, envvar="RECIPE_DEBUG", help="Show tracebacks and debug logs.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="recipe")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Turn a creator's videos into a local model that answers in their voice."""
    from engine.pipeline.logs import setup_console

    ctx.obj = {"debug": debug, "quiet": quiet}
    setup_console(debug=debug, quiet=quiet)


@main.command(epilog="Example: recipe validate recipes/jason_fung.yaml")
@click.argument("recipe", type=click.Path(path_type=Path))
def validate(recipe: Path) -> None:
    """Check a recipe against the schema; print every problem with its line."""
    from engine.pipeline.recipes import load_recipe

    loaded = load_recipe(recipe)
    click.echo(f"{recipe}: ok ({loaded.name}, {len(loaded.sources)} source(s))")


@main.command(epilog="Example: recipe plan recipes/demo.yaml")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--until", type=StepName(), default=None, help="Plan up to this step.")
@click.option("--force", type=StepName(), multiple=True, help="Pretend this step (and downstream) must rerun.")
@click.option("--retry-failed", is_flag=True, help="Plan as `recipe run --retry-failed` would run.")
@store_option
@runs_option
def plan(
    recipe: Path,
    until: str | None,
    force: tuple[str, ...],
    retry_failed: bool,
    store: Path | None,
    runs_dir: Path | None,
) -> None:
    """Show each step with its key and whether it is cached or to run (and its failed items)."""
    from engine.pipeline.runner import Paths, plan_recipe
    from engine.steps.base import RunOptions

    options = RunOptions(retry_failed=retry_failed)
    result = plan_recipe(recipe, Paths.resolve(store, runs_dir), until=until, force=force, options=options)
    for step in result.steps:
        click.echo(f"{step.name:<12} {step.key[:16]}  {step.status}")
    click.echo(f"run {result.run_id}")


@main.command(epilog=EPILOG_RUN)
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--until", type=StepName(), default=None, help="Stop after this step (e.g. split).")
@click.option("--force", type=StepName(), multiple=True, help="Rerun this step and everything downstream (repeatable).")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Ask again what failed before: LLM items (timeouts, invalid replies) of questions, answers, "
    "curate and augment, and videos recorded as unavailable/members-only. Finished items are reused.",
)
@click.option("--wait", is_flag=True, help="If another run holds the store, wait for it.")
@store_option
@runs_option
@click.pass_context
def run(
    ctx: click.Context,
    recipe: Path,
    until: str | None,
    force: tuple[str, ...],
    retry_failed: bool,
    wait: bool,
    store: Path | None,
    runs_dir: Path | None,
) -> None:
    """Run every step whose inputs changed; write runs/<id>/."""
    from engine.pipeline.runner import Paths, run_recipe
    from engine.steps.base import RunOptions

    options = RunOptions(retry_failed=retry_failed, debug=ctx.obj["debug"], quiet=ctx.obj["quiet"])
    result = run_recipe(recipe, Paths.resolve(store, runs_dir), until=until, force=force, options=options, wait=wait)
    ran = result.executed
    click.echo(
        f"{result.status}: {result.run_dir}  ({len(ran)} step(s) ran"
        f"{': ' + ', '.join(ran) if ran else ''}; {len(result.steps) - len(ran)} cached)"
    )
    if result.failed:
        click.echo(result.failed_summary(_retry_command(recipe, until, store, runs_dir)))


def _retry_command(recipe: Path, until: str | None, store: Path | None, runs_dir: Path | None) -> str:
    """The `recipe run` that re-asks the failed items of this run, as it was spelled (pasteable)."""
    words = ["recipe", "run", str(recipe), *(["--until", until] if until else [])]
    words += [*(["--store", str(store)] if store else []), *(["--runs-dir", str(runs_dir)] if runs_dir else [])]
    return shlex.join([*words, "--retry-failed"])


@main.command(epilog="Example: recipe runs")
@runs_option
def runs(runs_dir: Path | None) -> None:
    """List run folders: id, recipe, date, status, headline metrics."""
    from engine.inspect.runs import list_runs
    from engine.pipeline.runner import Paths

    found = list_runs(Paths.resolve(None, runs_dir).runs_dir)
    if not found:
        click.echo("no runs yet; start one with `recipe run recipes/demo.yaml`")
    for info in found:
        numbers = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.headline.items())
        click.echo(f"{info.run_id}  {info.recipe:<16} {info.created[:19]}  {info.status:<11} {numbers}")


@main.command(epilog="Example: recipe show 3f2a9c")
@click.argument("run_ref", type=RunRef())
@runs_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and metrics as JSON.")
def show(run_ref: str, runs_dir: Path | None, as_json: bool) -> None:
    """Show one run: steps, rows, failures by reason, metrics."""
    from engine.inspect.runs import find_run
    from engine.inspect.show import render_run, run_summary
    from engine.pipeline.runner import Paths

    run_dir = find_run(run_ref, Paths.resolve(None, runs_dir).runs_dir)
    summary = run_summary(run_dir)
    click.echo(json.dumps(summary, indent=2, default=str) if as_json else render_run(summary))


@main.command(epilog="Example: recipe schema --write   (from the repository root)")
@click.option(
    "--write",
    "write_to",
    is_flag=False,
    flag_value="schemas/recipe.schema.json",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write it to a file (default schemas/recipe.schema.json) instead of printing it.",
)
def schema(write_to: Path | None) -> None:
    """Print the recipe JSON Schema, generated from the step config classes (for editors and validators)."""
    from engine.pipeline.recipes import schema_text, write_schema

    if write_to is None:
        click.echo(schema_text(), nl=False)
        return
    click.echo(f"wrote {write_schema(write_to)}")


@main.command(epilog="Example: recipe gc --dry-run")
@click.option("--dry-run", is_flag=True, help="Only say what would be dropped.")
@store_option
@runs_option
def gc(dry_run: bool, store: Path | None, runs_dir: Path | None) -> None:
    """Drop store tables and files that no run folder references."""
    from engine.inspect.runs import garbage_collect
    from engine.pipeline.runner import Paths

    paths = Paths.resolve(store, runs_dir)
    result = garbage_collect(paths.store, paths.runs_dir, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    click.echo(
        f"{verb} {len(result.dropped_tables)} table(s) and {len(result.removed_dirs)} artifact folder(s); "
        f"freed {result.bytes_freed / 1e6:.1f} MB"
    )


@main.group(epilog="Example: recipe store check")
def store() -> None:
    """Check a store file, or copy what is readable of a damaged one into a new one."""


@store.command(epilog="Example: recipe store check --store runs/store.duckdb")
@store_option
@click.pass_context
def check(ctx: click.Context, store: Path | None) -> None:
    """Read every row of every table (read-only); say what is readable. Exit 1 if anything is not."""
    from engine.pipeline.runner import Paths
    from engine.pipeline.salvage import check_store

    path = Paths.resolve(store).store
    report = check_store(path)
    click.echo(f"{path}: opens; every row of its {len(report.tables)} table(s) read back (read-only):")
    _print_tables(report.tables)
    if report.damaged:
        click.echo(f"{path}: {len(report.damaged)} table(s) damaged; copy what is readable with:")
        click.echo(f"  recipe store salvage {path.with_name(path.stem + '.salvaged.duckdb')} --store {path}")
        ctx.exit(1)
    click.echo(f"{path}: ok, {len(report.tables)} table(s), every row readable")


@store.command(epilog="Example: recipe store salvage runs/store.salvaged.duckdb --store runs/store.duckdb")
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@store_option
def salvage(new: Path, store: Path | None) -> None:
    """Copy every readable row of the store into a NEW store file (the old one is only read).

    Item caches (LLM replies, transcripts) keep every readable row; a step table is kept only
    when all of its rows are readable (else the step is recomputed, from the saved caches).
    """
    from engine.pipeline.runner import Paths
    from engine.pipeline.salvage import salvage_store

    path = Paths.resolve(store).store
    report = salvage_store(path, new)
    _print_tables(report.tables, salvaged=True)
    kept = [t for t in report.tables if t.kept]
    click.echo(
        f"saved {sum(t.readable for t in kept)} row(s) in {len(kept)} table(s) into {new}; "
        f"lost {len(report.tables) - len(kept)} table(s) and {_lost_rows(report.tables)} row(s)"
    )
    click.echo(f"to use it: mv {path} {path}.damaged && mv {new} {path}")


def _print_tables(tables: list[Any], salvaged: bool = False) -> None:
    for table in tables:
        mark = "ok  " if table.complete else "LOST" if salvaged and not table.kept else "BAD "
        click.echo(f"  {mark} {table.name:<32} {table.kind:<8} {table.describe()}")


def _lost_rows(tables: list[Any]) -> str:
    if any(t.total is None for t in tables):
        return "an unknown number of"
    return str(sum(t.total - (t.readable if t.kept else 0) for t in tables))


@main.command(epilog="Example: recipe diff 3f2a9c 7b1e04 --md --plot losses.png")
@click.argument("run_a", type=RunRef())
@click.argument("run_b", type=RunRef())
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
@click.option("--md", "as_md", is_flag=True, help="Print the difference as Markdown.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write both runs' loss curves overlaid into this PNG.",
)
@runs_option
def diff(run_a: str, run_b: str, as_json: bool, as_md: bool, plot: Path | None, runs_dir: Path | None) -> None:
    """Compare two runs (recipe, metrics, data).

    Shows changed recipe keys, metrics side by side with deltas, questions added/removed
    and the tuned models' eval answers for the same questions.
    """
    from engine.inspect.diff import diff_runs, load_run, plot_losses, render_markdown, render_text
    from engine.inspect.runs import find_run
    from engine.pipeline.runner import Paths

    root = Paths.resolve(None, runs_dir).runs_dir
    dir_a, dir_b = find_run(run_a, root), find_run(run_b, root)
    result = diff_runs(dir_a, dir_b)
    if plot:
        plot_losses([(result.a, load_run(dir_a).metrics), (result.b, load_run(dir_b).metrics)], plot)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(render_markdown(result) if as_md else render_text(result))
    if plot and not as_json:
        click.echo(f"loss curves: {plot}")


@main.command(epilog="Example: recipe report 3f2a9c && xdg-open runs/3f2a9c*/report.html")
@click.argument("run_ref", type=RunRef())
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the HTML (default: RUN/report.html).",
)
@runs_option
def report(run_ref: str, out: Path | None, runs_dir: Path | None) -> None:
    """Write a self-contained report.html for a run (plots embedded)."""
    from engine.inspect.report import write_report
    from engine.inspect.runs import find_run
    from engine.pipeline.runner import Paths

    click.echo(str(write_report(find_run(run_ref, Paths.resolve(None, runs_dir).runs_dir), out)))


@main.command(
    epilog="Example: recipe new jane_doe --channel https://www.youtube.com/@janedoe "
    "--creator 'Dr. Jane Doe' --from recipes/jason_fung.yaml"
)
@click.argument("name")
@click.option("--channel", required=True, help="The new creator's YouTube channel URL (or @handle).")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Recipe to start from (default recipes/jason_fung.yaml, else recipes/demo.yaml).",
)
@click.option("--creator", default=None, help="The creator's name as prompts should say it (default: from the handle).")
@click.option(
    "--dir",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("recipes"),
    help="Where to write NAME.yaml (default recipes/).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing recipe of that name.")
def new(name: str, channel: str, source: Path | None, creator: str | None, out_dir: Path, force: bool) -> None:
    """Start a recipe for another creator.

    Copies an existing recipe, replaces name, creator and sources, marks fields to review
    with `# CHECK:` comments, validates it and writes DIR/NAME.yaml.
    """
    from engine.pipeline.new_recipe import new_recipe

    result = new_recipe(name, channel, source, creator, out_dir, force)
    if result.schema_written:
        click.echo(f"wrote {result.schema_written} (the JSON Schema its first line points editors at)")
    click.echo(f"wrote {result.path} (valid); review the fields marked CHECK:")
    for path in result.checks:
        click.echo(f"  {path}")


@main.command(epilog='Example: recipe ask 3f2a9c "Is it bad to skip breakfast?"')
@click.argument("run_ref", type=RunRef())
@click.argument("question")
@click.option(
    "--use",
    "prefer",
    type=click.Choice(["auto", "fused", "adapters"]),
    default="auto",
    help="Fused model/ or base + adapters/ (auto: fused when present).",
)
@click.option("--max-tokens", type=int, default=None, help="Most tokens (default: the recipe's eval.max_tokens).")
@click.option("--temperature", type=float, default=0.0, help="0 = greedy.")
@click.option("--seed", type=int, default=0, help="Seed for sampling.")
@runs_option
def ask(
    run_ref: str,
    question: str,
    prefer: str,
    max_tokens: int | None,
    temperature: float,
    seed: int,
    runs_dir: Path | None,
) -> None:
    """Ask a run's tuned model; tokens stream out.

    Uses the fused model/ when present, else the base model with adapters/.
    """
    from engine.inspect.ask import ask as ask_run
    from engine.inspect.runs import find_run
    from engine.pipeline.runner import Paths

    paths = Paths.resolve(None, runs_dir)
    for piece in ask_run(
        find_run(run_ref, paths.runs_dir), question, paths.models, prefer, max_tokens, temperature, seed
    ):
        click.echo(piece, nl=False)
    click.echo()


@main.command(epilog='Example: recipe completion bash   (in ~/.bashrc: eval "$(recipe completion bash)")')
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell code that completes commands, options, step names and run ids.

    bash: eval "$(recipe completion bash)" in ~/.bashrc; zsh: the same with zsh in ~/.zshrc;
    fish: recipe completion fish > ~/.config/fish/completions/recipe.fish. The same code comes
    from click's own variable: _RECIPE_COMPLETE=bash_source recipe.
    """
    complete = get_completion_class(shell)
    assert complete is not None  # SHELLS lists only the shells click has a class for
    click.echo(complete(main, {}, PROG, f"_{PROG.upper()}_COMPLETE").source())


if __name__ == "__main__":
    main(prog_name=PROG)
