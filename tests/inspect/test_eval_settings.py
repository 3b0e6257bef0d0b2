"""Sampling settings in show, diff and report: named by what they are, with every parameter, for
eval.json files of every version (before evaluate v4 the penalised greedy setting was "greedy")."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main
from engine.inspect.diff import diff_runs, render_markdown, render_text
from engine.inspect.report import write_report
from helpers.run_folders import make_run

OLD_SETTINGS = {"eval": {"max_tokens": 96, "temperature": 0.7, "seed": 3, "repetition_penalty": 1.1}}


def old_eval(tuned: str) -> dict:
    """An eval.json as evaluate v3 wrote it: answers and scores under "greedy" and "sampled"."""
    scores = {"format": {"gap": 0.2}, "length": {"ratio": 1.1}, "loop_rate": 0.0, "banned_rate": 0.0}
    return {
        "settings": OLD_SETTINGS,
        "scores": {"greedy": {"base": scores, "tuned": scores}, "sampled": {"base": scores, "tuned": scores}},
        "summary": {
            "base_format_gap": 0.4,
            "tuned_format_gap": 0.2,
            "base_format_gap_sampled": 0.5,
            "tuned_format_gap_sampled": 0.6,
        },
        "items": [
            {
                "id": "e0",
                "source": "eval",
                "question": "Is fasting safe?",
                "reference": None,
                "answers": {"greedy": {"base": "b", "tuned": tuned}, "sampled": {"base": "b2", "tuned": "t2"}},
            }
        ],
    }


def new_eval(tuned: str) -> dict:
    """The same as evaluate v4 writes it: settings named by their parameters, all recorded."""
    main = {
        "label": "greedy+rep1.1",
        "summary_suffix": "",
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "repetition_penalty": 1.1,
        "repetition_context_size": 20,
        "seed": 3,
        "max_tokens": 96,
    }
    plain = {
        **main,
        "label": "greedy",
        "summary_suffix": "_plain",
        "repetition_penalty": 1.0,
        "repetition_context_size": None,
    }
    return {
        "settings": OLD_SETTINGS,
        "sampling": {"greedy+rep1.1": main, "greedy": plain},
        "summary": {
            "base_format_gap": 0.4,
            "tuned_format_gap": 0.1,
            "base_format_gap_plain": 0.4,
            "tuned_format_gap_plain": 0.5,
            "setting": "greedy+rep1.1",
            "setting_plain": "greedy",
        },
        "items": [
            {
                "id": "e0",
                "source": "eval",
                "question": "Is fasting safe?",
                "reference": None,
                "answers": {"greedy+rep1.1": {"base": "b", "tuned": tuned}, "greedy": {"base": "b", "tuned": "echo"}},
            }
        ],
    }


def runs(tmp_path: Path) -> tuple[Path, Path]:
    old, new = make_run(tmp_path, "old111"), make_run(tmp_path, "new222")
    (old / "eval.json").write_text(json.dumps(old_eval("old answer")), encoding="utf-8")
    (new / "eval.json").write_text(json.dumps(new_eval("new answer")), encoding="utf-8")
    return old, new


def test_an_old_run_shows_its_greedy_setting_as_what_it_was(tmp_path: Path) -> None:
    old, _ = runs(tmp_path)
    page = write_report(old).read_text(encoding="utf-8")
    settings = page[page.index("<h2>Sampling settings</h2>") : page.index("<h2>Evaluation")]
    assert "<b>greedy+rep1.1</b> (called “greedy” in this eval.json)" in settings
    assert "repetition_penalty 1.1 over the last 20 tokens, seed 3, max_tokens 96" in settings
    assert "<b>sampled-t0.7+rep1.1</b> (called “sampled” in this eval.json)" in settings
    assert "<td>format_gap</td><td>sampled-t0.7+rep1.1</td>" in page
    answers = page[page.index("<h2>Answers</h2>") :]
    assert "<td>greedy+rep1.1</td>" in answers and "<td>greedy</td>" not in answers
    shown = CliRunner().invoke(main, ["show", str(old)])
    assert shown.exit_code == 0, shown.output
    assert '(none)     greedy+rep1.1 (called "greedy" in this eval.json): temperature 0' in shown.output


def test_diff_pairs_each_runs_main_setting_and_lines_up_the_settings(tmp_path: Path) -> None:
    old, new = runs(tmp_path)
    d = diff_runs(old, new)
    assert d.answers == [{"question": "Is fasting safe?", "a": "old answer", "b": "new answer"}]
    by_suffix = {r["suffix"]: r for r in d.sampling}
    assert by_suffix[""]["a"]["setting"] == by_suffix[""]["b"]["setting"] == "greedy+rep1.1"
    assert by_suffix["_sampled"]["b"] is None and by_suffix["_plain"]["a"] is None
    assert by_suffix["_plain"]["b"]["parameters"].startswith("temperature 0, top_p 1, top_k 0, min_p 0, no repetition")
    text = render_text(d)
    assert "answers (tuned, greedy+rep1.1):" in text and "*_plain: — -> greedy (temperature 0" in text
    assert "## Eval answers (tuned, greedy+rep1.1)" in render_markdown(d)
    as_json = CliRunner().invoke(main, ["diff", str(old), str(new), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["sampling"][0]["suffix"] == ""
    assert by_suffix[""]["same"]  # rebuilt from the old run's settings, equal to the recorded one
    assert not by_suffix["_plain"]["same"]


def test_settings_come_from_metrics_json_when_eval_json_is_gone(tmp_path: Path) -> None:
    _, new = runs(tmp_path)
    doc = json.loads((new / "eval.json").read_text())
    metrics = json.loads((new / "metrics.json").read_text())
    metrics["evaluate"] = {**doc["summary"], "sampling": doc["sampling"]}  # as the step records them
    (new / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (new / "eval.json").unlink()
    page = write_report(new).read_text(encoding="utf-8")
    assert "<b>greedy</b>" in page and "<td>format_gap</td><td>greedy</td>" in page
    shown = CliRunner().invoke(main, ["show", str(new)])
    assert "_plain     greedy: temperature 0" in shown.output
