"""The verdict: did the tune help? One line printed by `recipe show`, `recipe runs` and report.html,
on run folders built on disk (better, worse, partial and damaged evaluations)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main
from engine.inspect.report import write_report
from engine.inspect.verdict import WORSE_WARNING, run_verdict, verdict
from helpers.run_folders import make_run

BETTER = {
    "base_loss": 1.98,
    "tuned_loss": 1.801,
    "base_format_gap": 0.33,
    "tuned_format_gap": 0.09,
    "base_probes_passed": 3,
    "tuned_probes_passed": 3,
    "probes_total": 3,
    "questions": 4,
}
# The demo as measured in issue 13: the tuned model's held-out loss is worse than the base's.
WORSE = {**BETTER, "tuned_loss": 2.048, "tuned_format_gap": 0.41, "tuned_probes_passed": 2}


def _with_eval(root: Path, run_id: str, summary: dict | None, metrics_eval: dict | None = None) -> Path:
    """A finished run folder whose eval.json has exactly `summary` (None: no eval.json)."""
    run = make_run(root, run_id, with_eval=False)
    if summary is not None:
        (run / "eval.json").write_text(json.dumps({"summary": summary, "items": []}), encoding="utf-8")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    metrics["train"].update(kept_iteration=19, kept_val_loss=1.4012, final_val_loss=1.5823, final_iteration=30)
    if metrics_eval is not None:
        metrics["evaluate"] = metrics_eval
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run


def test_a_better_tune_reads_better_closer_kept(tmp_path: Path) -> None:
    found = run_verdict(_with_eval(tmp_path, "good01", BETTER))
    assert found is not None
    assert found.line == "verdict: held-out loss 1.98 -> 1.80 (better), format closer (0.33 -> 0.09), probes kept 3/3"
    assert found.warning is None
    assert found.notes == ["kept the adapter of iteration 19 of 30: validation loss 1.40, final 1.58"]


def test_a_worse_tune_is_said_plainly_with_a_warning(tmp_path: Path) -> None:
    found = run_verdict(_with_eval(tmp_path, "bad001", WORSE))
    assert found is not None
    assert found.line == (
        "verdict: held-out loss 1.98 -> 2.05 (worse), format further (0.33 -> 0.41), probes lost 1 (3/3 -> 2/3)"
    )
    assert found.warning == WORSE_WARNING and "WORSE than the base model" in found.warning
    assert found.short_line == "loss WORSE (1.98->2.05), format further, probes 2/3"


def test_partial_and_odd_summaries(tmp_path: Path) -> None:
    # An older run: loss only, no format scores, no probes.
    assert verdict({"base_loss": 3.0, "tuned_loss": 2.0}).line == "verdict: held-out loss 3.00 -> 2.00 (better)"
    # Probes without a base count or a total (probes off for the base, or an older summary).
    assert verdict({"tuned_probes_passed": 2}).line == "verdict: probes passed 2"
    # A change too small to print at 2 decimals is "unchanged" and shows enough digits to see it.
    same = verdict({"base_loss": 1.9841, "tuned_loss": 1.9862, "base_format_gap": 0.2, "tuned_format_gap": 0.2})
    assert same.line == "verdict: held-out loss 1.984 -> 1.986 (unchanged), format unchanged (0.20 -> 0.20)"
    assert same.warning is None
    # Values of the wrong type are ignored rather than crashing a listing of every run.
    assert verdict({"base_loss": "n/a", "tuned_loss": None, "tuned_probes_passed": True}) is None
    assert verdict({}) is None and verdict({"questions": 3, "heldout_loss_tokens": 0}) is None


def test_the_verdict_falls_back_to_metrics_and_survives_damaged_files(tmp_path: Path) -> None:
    # eval.json missing: the evaluate step's copy of its summary in metrics.json is used.
    from_metrics = run_verdict(_with_eval(tmp_path, "m00001", None, metrics_eval=WORSE))
    assert from_metrics is not None and from_metrics.warning == WORSE_WARNING
    # eval.json half-written, or a list instead of an object: same fallback, no exception.
    half = _with_eval(tmp_path, "h00001", None, metrics_eval=BETTER)
    (half / "eval.json").write_text('{"summary": {"base_loss": 1.9', encoding="utf-8")
    assert run_verdict(half).line.startswith("verdict: held-out loss 1.98 -> 1.80 (better)")
    listed = _with_eval(tmp_path, "l00001", None)
    (listed / "eval.json").write_text("[1, 2]", encoding="utf-8")
    (listed / "metrics.json").write_text("{not json", encoding="utf-8")
    assert run_verdict(listed) is None
    # A run that stopped before evaluate has no verdict.
    assert run_verdict(make_run(tmp_path, "n00001", with_eval=False)) is None


def test_show_runs_and_report_print_the_verdict(tmp_path: Path) -> None:
    _with_eval(tmp_path, "bad001", WORSE)
    good = _with_eval(tmp_path, "good01", BETTER)
    make_run(tmp_path, "noeval", with_eval=False)

    shown = CliRunner().invoke(main, ["show", "bad001", "--runs-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert (
        lines[2]
        == "verdict: held-out loss 1.98 -> 2.05 (worse), format further (0.33 -> 0.41), probes lost 1 (3/3 -> 2/3)"
    )
    assert lines[3] == f"  WARNING: {WORSE_WARNING}"
    assert "kept the adapter of iteration 19 of 30" in lines[4]
    as_json = json.loads(CliRunner().invoke(main, ["show", "good01", "--runs-dir", str(tmp_path), "--json"]).output)
    assert as_json["verdict"]["warning"] is None and as_json["verdict"]["line"].startswith("verdict: held-out loss")
    no_eval = CliRunner().invoke(main, ["show", "noeval", "--runs-dir", str(tmp_path)])
    assert no_eval.exit_code == 0 and "verdict" not in no_eval.output

    listed = CliRunner().invoke(main, ["runs", "--runs-dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    by_id = {line.split()[0]: line for line in listed.output.splitlines()}
    assert by_id["bad001"].endswith("kept_iteration=19  verdict=loss WORSE (1.98->2.05), format further, probes 2/3")
    assert by_id["good01"].endswith("verdict=loss better (1.98->1.80), format closer, probes 3/3")
    assert "verdict" not in by_id["noeval"]

    page = write_report(tmp_path / "bad001").read_text(encoding="utf-8")
    top = page.index("verdict: held-out loss 1.98 -&gt; 2.05 (worse)")
    assert top < page.index("<h2>Steps</h2>")
    assert page.index("Warning: the tune made held-out loss WORSE") < page.index("<h2>Steps</h2>")
    good_page = write_report(good).read_text(encoding="utf-8")
    assert "verdict: held-out loss 1.98 -&gt; 1.80 (better)" in good_page and "WORSE" not in good_page
    assert "verdict:" not in write_report(tmp_path / "noeval").read_text(encoding="utf-8")
