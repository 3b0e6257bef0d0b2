"""Import rules between engine's packages (DESIGN: layers point one way).

The rules are checked on the source with an AST walk, so an import hidden inside a function
counts as much as one at the top of the file. Every module is also imported for real, so a
module that cannot be imported (a cycle between top-level imports, say) fails here by name.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"


def module_name(path: Path) -> str:
    """engine/inspect/diff.py -> engine.inspect.diff; a package's __init__.py -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def imports_of(module_path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, top level or inside functions.

    `from X import n` gives X.n, because n may itself be a module (`from engine import inspect`);
    relative imports are made absolute; importlib.import_module("...") with a constant counts too.
    """
    tree = ast.parse(module_path.read_text(encoding="utf-8"), filename=str(module_path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(node, module_path)
            found += [(node.lineno, base if alias.name == "*" else f"{base}.{alias.name}") for alias in node.names]
        elif _is_import_call(node):
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def _absolute_base(node: ast.ImportFrom, module_path: Path) -> str:
    if not node.level:
        return node.module or ""
    package = module_name(module_path).split(".")
    if module_path.name != "__init__.py":
        package = package[:-1]  # a plain module's package is its folder
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _is_import_call(node: ast.AST) -> bool:
    if not (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# Modules outside engine/inspect that may import it, and why. The runner writes report.html once
# a run is complete (a lazy import at the top of the pipeline, so the run folder it leaves is
# whole for library callers too, not only for `recipe run`).
MAY_IMPORT_INSPECT = {
    "engine.cli": "the command line shows, diffs and reports runs",
    "engine.pipeline.runner": "writes report.html after the run folder is complete",
}


def test_only_the_cli_and_the_runner_import_inspect() -> None:
    offending = []
    for path in engine_modules():
        name = module_name(path)
        importlib.import_module(name)  # every module imports on its own (no hidden cycle)
        if _within(name, "engine.inspect") or name in MAY_IMPORT_INSPECT:
            continue
        offending += [
            f"{path.relative_to(ROOT)}:{line} imports {imported}"
            for line, imported in imports_of(path)
            if _within(imported, "engine.inspect")
        ]
    assert not offending, (
        "engine.inspect reads finished run folders and must not be imported by lower "
        "layers (pipeline, steps, llm, sources, data, models, recipe):\n  " + "\n  ".join(offending)
    )


# Layers, lowest first (DESIGN: cli -> inspect / pipeline -> steps -> llm, sources, data, models
# -> recipe, errors). The store, hashing, progress bars and logging sit with the recipe at the
# bottom: every layer above writes tables, hashes keys and shows progress.
CORE_PIPELINE = (
    "engine.pipeline.store",
    "engine.pipeline.store_open",
    "engine.pipeline.hashing",
    "engine.pipeline.progress",
    "engine.pipeline.logs",
)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("engine", "engine.errors", "engine.retry"),
    ("engine.recipe", *CORE_PIPELINE),
    ("engine.llm", "engine.sources", "engine.data", "engine.models"),
    ("engine.steps",),
    ("engine.pipeline", "engine.inspect"),
    ("engine.cli",),
)


def layer_of(module: str) -> int:
    """The layer of the most specific prefix that names the module."""
    best, rank = -1, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if _within(module, prefix) and len(prefix) > best:
                best, rank = len(prefix), level
    return rank


def engine_imports(path: Path) -> list[tuple[int, str]]:
    """Imports of engine modules only, each reduced to a module that exists (X.name -> X)."""
    known = {module_name(p) for p in engine_modules()}
    out = []
    for line, imported in imports_of(path):
        if not _within(imported, "engine"):
            continue
        while imported not in known and "." in imported:
            imported = imported.rsplit(".", 1)[0]
        out.append((line, imported))
    return out


def test_layers_point_one_way() -> None:
    offending = []
    for path in engine_modules():
        name = module_name(path)
        for line, imported in engine_imports(path):
            if layer_of(imported) > layer_of(name) and not (
                name in MAY_IMPORT_INSPECT and _within(imported, "engine.inspect")
            ):
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (a higher layer)")
    assert not offending, "layers point one way (see LAYERS):\n  " + "\n  ".join(offending)


def test_steps_never_import_steps() -> None:
    shared = {"engine.steps", "engine.steps.base"}  # the registry and the step contract
    offending = []
    for path in sorted((ENGINE / "steps").glob("*.py")):
        name = module_name(path)
        offending += [
            f"{path.relative_to(ROOT)}:{line} imports {imported}"
            for line, imported in engine_imports(path)
            if _within(imported, "engine.steps") and imported not in shared and imported != name
        ]
    assert not offending, (
        "a step reads upstream tables and files, never another step's code; move shared "
        "code to data/, sources/, models/ or llm/:\n  " + "\n  ".join(offending)
    )


def test_no_import_cycles_even_inside_functions() -> None:
    graph = {module_name(p): {m for _, m in engine_imports(p)} - {module_name(p)} for p in engine_modules()}
    cycles = [cycle for cycle in (_cycle_from(start, graph) for start in sorted(graph)) if cycle]
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start if one exists (depth-first, each module visited once).

    A package's __init__ is imported by its submodules implicitly, not explicitly, so an edge to
    a bare package name (engine.steps) only counts when that package's own file imports back.
    """
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None
