"""Reading one run folder back: manifest, metrics, resolved recipe, eval and loss curves.

Every inspect command (show, runs, diff, report, ask) reads run folders through here, so they
agree on what a missing or half-written file means: only a missing manifest.json is an error
(it is what makes a folder a run); the other files are absent whenever a run stopped early.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RecipeError
from engine.recipe.file_text import decode


@dataclass
class RunData:
    path: Path
    manifest: dict
    metrics: dict
    resolved: dict
    eval: dict

    @property
    def run_id(self) -> str:
        return self.manifest.get("run_id") or self.path.name


def read_manifest(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{run_dir}: not a run folder (no manifest.json); list runs with `recipe runs`") from None


def read_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_json(path: Path) -> dict:
    """A JSON file of the folder, {} when it is missing or unreadable (a run that stopped early)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def load_run(run_dir: Path) -> RunData:
    return RunData(
        run_dir,
        read_manifest(run_dir),
        read_metrics(run_dir),
        read_json(run_dir / "resolved.json"),
        read_json(run_dir / "eval.json"),
    )


def recipe_text(run_dir: Path, resolved: dict) -> str:
    """The recipe as the user wrote it, else the resolved one (folders from older versions)."""
    path = run_dir / "recipe.yaml"
    # a copy of the file as given: decoded the way it was validated (UTF-16 from Windows editors too)
    return decode(path.read_bytes()) if path.is_file() else json.dumps(resolved, indent=2)


def loss_curves(metrics: dict) -> dict[str, list[tuple[int, float]]]:
    """(iteration, loss) points of the train step's curves; missing keys give empty curves."""
    train = metrics.get("train") or {}
    out = {}
    for name in ("train_loss", "val_loss"):
        points = []
        for p in train.get(name) or []:
            loss = p.get("loss", p.get(name)) if isinstance(p, dict) else None
            if isinstance(loss, (int, float)) and "iteration" in p:
                points.append((int(p["iteration"]), float(loss)))
        out[name] = points
    return out
