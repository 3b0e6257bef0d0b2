"""Build finished run folders directly (manifest, metrics, resolved, eval, real data.duckdb) for
tests of diff/report/show, without running the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

RECIPE_YAML = "name: demo\ncreator:\n  name: Dr. Test\nsources:\n  - type: local\n    path: demo\n"


def make_run(
    root: Path,
    run_id: str,
    lr: float = 1e-4,
    questions: tuple[str, ...] = ("q1", "q2", "q3"),
    loss_offset: float = 0.0,
    with_eval: bool = True,
) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(RECIPE_YAML + f"train:\n  learning_rate: {lr}\n", encoding="utf-8")
    resolved = {
        "name": "demo",
        "creator": {"name": "Dr. Test", "language": "en"},
        "sources": [{"type": "local", "path": "demo"}],
        "train": {"learning_rate": lr, "iters": 30, "lora": {"rank": 8, "keys": ["q", "v"]}},
    }
    steps = {
        "split": {"key": "s" * 64, "status": "ran", "rows": len(questions), "seconds": 0.1},
        "train": {"key": "t" * 64, "status": "ran", "rows": 1, "seconds": 10.0},
    }
    manifest = {
        "run_id": run_id,
        "recipe": "demo",
        "status": "complete",
        "created": "2026-11-25T10:00:00",
        "steps": steps,
    }
    train_loss = [{"iteration": i, "loss": 3.0 - i * 0.05 + loss_offset, "learning_rate": lr} for i in (5, 10, 15, 20)]
    val_loss = [{"iteration": i, "loss": 3.1 - i * 0.04 + loss_offset} for i in (0, 10, 20)]
    metrics = {
        "split": {"train": len(questions) - 1, "valid": 1},
        "train": {
            "learning_rate": lr,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "best_val_loss": min(p["loss"] for p in val_loss),
        },
    }
    for name, data in (("resolved.json", resolved), ("manifest.json", manifest), ("metrics.json", metrics)):
        (run / name).write_text(json.dumps(data), encoding="utf-8")
    if with_eval:
        (run / "eval.json").write_text(json.dumps(eval_doc(loss_offset)), encoding="utf-8")
    with duckdb.connect(str(run / "data.duckdb")) as con:
        con.execute(
            "CREATE TABLE split (id VARCHAR, split VARCHAR, question VARCHAR, answer VARCHAR, "
            "status VARCHAR, reason VARCHAR)"
        )
        for i, q in enumerate(questions):
            con.execute(
                "INSERT INTO split VALUES (?, 'train', ?, ?, 'ok', NULL)",
                [f"id{i}", q, f"An answer to {q} " + "word " * (5 + 3 * i)],
            )
        con.execute("INSERT INTO split VALUES ('bad', 'train', 'dropped q', 'x', 'failed', 'too short')")
    return run


def eval_doc(offset: float) -> dict:
    summary = {
        "base_loss": 3.0,
        "tuned_loss": 2.0 + offset,
        "base_loop_rate": 0.5,
        "tuned_loop_rate": 0.0,
        "base_probes_passed": 3,
        "tuned_probes_passed": 2,
        "questions": 1,
    }
    items = [
        {
            "id": "e0",
            "source": "eval",
            "question": "Is fasting safe?",
            "reference": None,
            "answers": {"greedy": {"base": "I am a model.", "tuned": f"Yes, mostly <b>safe</b> ({offset})."}},
        }
    ]
    return {"summary": summary, "items": items}
