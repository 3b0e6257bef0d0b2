"""`recipe diff`: recipe key changes, metric deltas, dataset difference via DuckDB ATTACH."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.inspect.diff import diff_runs, flatten, loss_curves, recipe_changes, render_markdown
from helpers.run_folders import make_run


@pytest.fixture()
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_run(tmp_path / "runs", "aaaa1111", lr=1e-4, questions=("q1", "q2", "q3"))
    b = make_run(tmp_path / "runs", "bbbb2222", lr=3e-4, questions=("q2", "q3", "q4", "q5"), loss_offset=-0.5)
    return a, b


def test_flatten_names_nested_keys_and_list_items() -> None:
    flat = flatten({"train": {"lora": {"rank": 8}}, "sources": [{"path": "x"}], "empty": {}})
    assert flat == {"train.lora.rank": 8, "sources[0].path": "x", "empty": {}}


def test_recipe_changes_lists_only_what_differs() -> None:
    changes = recipe_changes({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5, "d": 3}, "e": True})
    assert changes == [{"key": "b.c", "a": 2, "b": 5}, {"key": "e", "a": None, "b": True}]


def test_diff_of_one_hyperparameter_shows_exactly_that_change(two_runs: tuple[Path, Path]) -> None:
    d = diff_runs(*two_runs)
    assert d.recipe == [{"key": "train.learning_rate", "a": 1e-4, "b": 3e-4}]
    rows = {r["metric"]: r for r in d.metrics}
    assert rows["final_train_loss"]["a"] == pytest.approx(2.0)
    assert rows["final_train_loss"]["delta"] == pytest.approx(-0.5)
    assert rows["best_val_loss"]["delta"] == pytest.approx(-0.5)
    assert rows["eval.tuned_loss"]["delta"] == pytest.approx(-0.5)
    assert rows["rows.split"]["delta"] == 1
    assert rows["train.learning_rate"]["delta"] == pytest.approx(2e-4)


def test_dataset_difference_from_both_duckdb_files(two_runs: tuple[Path, Path]) -> None:
    ds = diff_runs(*two_runs).dataset
    assert ds["table"] == "split"
    assert ds["added"] == ["q4", "q5"] and ds["removed"] == ["q1"]
    assert (ds["a_questions"], ds["b_questions"]) == (3, 4)  # the failed row is not part of the dataset


def test_eval_answers_side_by_side(two_runs: tuple[Path, Path]) -> None:
    pairs = diff_runs(*two_runs).answers
    assert pairs == [
        {"question": "Is fasting safe?", "a": "Yes, mostly <b>safe</b> (0.0).", "b": "Yes, mostly <b>safe</b> (-0.5)."}
    ]


def test_missing_files_are_tolerated(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", with_eval=False)
    b = make_run(tmp_path, "b", with_eval=False)
    (b / "metrics.json").unlink()
    (b / "data.duckdb").unlink()
    d = diff_runs(a, b)
    assert d.dataset["table"] is None
    assert {r["metric"]: r["b"] for r in d.metrics}["final_train_loss"] is None
    assert loss_curves({}) == {"train_loss": [], "val_loss": []}
    assert "final_train_loss" in render_markdown(d)


def test_cli_diff_json_md_and_plot(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    runner = CliRunner()
    out = runner.invoke(main, ["diff", str(a), str(b), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["recipe"][0]["key"] == "train.learning_rate"
    md = runner.invoke(main, ["diff", "aaaa", "bbbb", "--md", "--runs-dir", str(a.parent)])
    assert md.exit_code == 0, md.output
    assert "| `train.learning_rate` | 0.0001 | 0.0003 |" in md.output
    assert "+ q4" in md.output and "- q1" in md.output
    plot = tmp_path / "losses.png"
    text = runner.invoke(main, ["diff", str(a), str(b), "--plot", str(plot)])
    assert text.exit_code == 0, text.output
    assert "train.learning_rate: 0.0001 -> 0.0003" in text.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
