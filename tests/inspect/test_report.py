"""report.html: valid, self-contained HTML with the plots embedded as base64 PNG."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.inspect.report import write_report
from helpers.run_folders import make_run

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Checker(HTMLParser):
    """Collects images, text and checks that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[dict] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Checker:
    checker = Checker()
    checker.feed(path.read_text(encoding="utf-8"))
    checker.close()
    return checker


def test_report_embeds_plots_and_eval_table(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1")
    page = parse(write_report(run))
    assert page.errors == [] and page.stack == []
    assert {img["alt"] for img in page.images} == {"dataset length histograms", "loss curves"}
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix) :])[:4] == b"\x89PNG"
    text = " ".join(page.text)
    assert "Evaluation: base vs tuned" in text and "loop_rate" in text
    assert "Yes, mostly <b>safe</b>" in text  # answers are escaped, not injected as markup
    assert "learning_rate: 0.0001" in text  # the recipe


def test_report_of_a_run_without_training_or_data(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r2", with_eval=False)
    (run / "metrics.json").unlink()
    (run / "data.duckdb").unlink()
    page = parse(write_report(run, tmp_path / "out.html"))
    assert page.errors == [] and page.images == []
    assert "No training in this run." in " ".join(page.text)


def test_cli_report(tmp_path: Path) -> None:
    run = make_run(tmp_path, "abc123")
    cached = tmp_path / "artifact-report.html"  # the run folder links the evaluate step's file
    cached.write_text("cached", encoding="utf-8")
    (run / "report.html").hardlink_to(cached)
    result = CliRunner().invoke(main, ["report", "abc", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == run / "report.html"
    assert cached.read_text(encoding="utf-8") == "cached"  # regenerating never writes into the cache
    assert (run / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
def test_report_renders_in_headless_browser(tmp_path: Path) -> None:
    report = write_report(make_run(tmp_path, "r3"))
    shot = tmp_path / "shot.png"
    # The extra flags keep chromium from reaching for Google's hosts (this machine has no network).
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            report.as_uri(),
        ],
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert shot.stat().st_size > 10_000


def test_show_includes_dataset_stats_and_eval_summary(tmp_path: Path) -> None:
    run = make_run(tmp_path, "show1")
    result = CliRunner().invoke(main, ["show", "show1", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "train       3 examples  question 1.0 words  answer 13.0 words" in result.output
    assert re.search(r"loop_rate\s+0.5\s+0\n", result.output)
    as_json = CliRunner().invoke(main, ["show", str(run), "--json"])
    data = json.loads(as_json.output)
    assert data["dataset"]["train"]["examples"] == 3
    assert data["eval"]["tuned_loss"] == 2.0


def test_eval_colours_length_ratio_by_distance_to_one() -> None:
    from engine.inspect.report import _marked

    assert 'class="better"' in _marked("length_ratio", 1.7, 1.1)  # closer to the references' length
    assert 'class="worse"' in _marked("length_ratio_sampled", 0.9, 1.6)
    assert 'class="better"' in _marked("loss", 2.5, 2.1)


def test_count_axes_have_whole_ticks_only() -> None:
    """A handful of rows once gave ticks at 0.5 rows; 12 answers of one length gave 31.65 words."""
    from engine.data.plots import histograms, pyplot

    fig = histograms({"question words": [6, 7, 7, 9, 10], "answer words": [32] * 12})
    try:
        for ax in fig.axes:
            for ticks, (low, high) in ((ax.get_yticks(), ax.get_ylim()), (ax.get_xticks(), ax.get_xlim())):
                shown = [t for t in ticks if low <= t <= high]
                assert shown and all(float(t).is_integer() for t in shown), (ax.get_title(), list(ticks))
    finally:
        pyplot().close(fig)
