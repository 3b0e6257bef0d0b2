"""A fresh run end to end (fake LLM, tiny llama): what its data.duckdb, report.html and `recipe show`
tell a reader. One source video yields no question at all and one question is dropped, as real
channels do: the report must still show that video and that row."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from engine.cli import main
from helpers.pipeline import CASES, pipeline_model

SLEEP = "Sleep matters.\n\nA short night raises cortisol, and cortisol raises blood sugar the next morning.\n"


def responder(body: dict) -> str:
    """The pipeline's fake model, except: a video about sleep gets no question, and the fasting video
    gets one more question that refers to the video (the questions step drops it)."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    if "List the questions" in prompt:
        title = re.search(r'titled "([^"]*)"', prompt).group(1).lower()
        if "sleep" in title:
            return json.dumps({"questions": []})
        if "fasting" in title:
            reply = json.loads(pipeline_model(body))
            reply["questions"].append({"question": "What does the speaker say in this video?", "tags": ["x"]})
            return json.dumps(reply)
    return pipeline_model(body)


RECIPE = """name: fresh
creator: {{name: Dr. Test}}
sources: [{{type: local, path: transcripts}}]
llm: {{model: openai/fake, api_base: "{base_url}", reask: 0, retries: 0}}
augment: {{paraphrases: 1}}
split: {{valid: 0.3, seed: 1, system_prompt: "You are {{creator}}."}}
train:
  model: {model}
  learning_rate: 3.0e-3
  iters: 2
  batch_size: 2
  max_seq_length: 128
  steps_per_report: 1
  steps_per_eval: 2
  lora: {{rank: 4, layers: 2}}
export: {{gguf: {{type: f16}}}}
eval: {{questions: [Why fast?], heldout: 1, max_tokens: 6, sampled: false, plain_greedy: true}}
"""


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    import engine.llm.client as llm
    from engine.pipeline.runner import Paths, run_recipe
    from engine.steps.base import RunOptions
    from fakes.openai_server import FakeOpenAI

    root = tmp_path_factory.mktemp("fresh")
    shutil.copytree(CASES / "engine_transcripts", root / "transcripts")
    (root / "transcripts" / "sleep_and_stress.txt").write_text(SLEEP, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "sk-test")
        mp.setattr(llm, "BACKOFF_BASE", 0.01)
        with FakeOpenAI(responder) as srv:
            recipe = root / "recipe.yaml"
            recipe.write_text(RECIPE.format(base_url=srv.base_url, model=tiny_llama), encoding="utf-8")
            paths = Paths(runs_dir=root / "runs", store=root / "runs" / "store.duckdb")
            result = run_recipe(recipe, paths, options=RunOptions(quiet=True))
    assert result.executed[-1] == "evaluate"
    return result.run_dir


def test_every_table_and_column_of_data_duckdb_has_a_comment(fresh_run: Path) -> None:
    with duckdb.connect(str(fresh_run / "data.duckdb"), read_only=True) as con:
        tables = dict(con.execute("SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal").fetchall())
        columns = con.execute(
            "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE NOT internal"
        ).fetchall()
        settings = {r[0] for r in con.execute("SELECT DISTINCT setting FROM evaluate").fetchall()}
    assert set(tables) >= {"sources", "transcripts", "questions", "answers", "curate", "split", "evaluate"}
    assert not [t for t, c in tables.items() if not c], "tables without a comment"
    assert tables["curate"].startswith("curate: quality filters")
    assert not [(t, c) for t, c, comment in columns if not comment], "columns without a comment"
    comments = {(t, c): comment for t, c, comment in columns}
    # llm_score is off: the score column stays (every run's file has the same columns), documented
    assert "filters.llm_score is off" in comments["curate", "score"]
    assert comments["curate", "score"].endswith("NULL in every row of this run.")
    assert "NULL in every row" not in comments["curate", "quality"]
    assert settings == {"greedy+rep1.1", "greedy"}  # named by what they are
    assert not list(fresh_run.glob(".data.duckdb*"))  # no staging file left behind


def test_report_shows_coverage_left_out_rows_llm_calls_settings_and_probes(fresh_run: Path) -> None:
    page = (fresh_run / "report.html").read_text(encoding="utf-8")
    for heading in ("Coverage per video", "Rows left out", "LLM calls", "Sampling settings", "Probes"):
        assert f"<h2>{heading}</h2>" in page, heading
    coverage = _section(page, "Coverage per video")
    assert "3 of 4 source videos have kept rows; 1 has none" in coverage
    assert re.search(r'<span class="worse">sleep_and_stress</span>.*?<span class="worse">0</span>', coverage)
    left_out = _section(page, "Rows left out")
    assert "What does the speaker say in this video?" in left_out and "dropped" in left_out
    llm = _section(page, "LLM calls")
    rows = {m[0]: m[1:] for m in re.findall(r"<tr><td>(\w+)</td><td>(\w*)</td><td>([^<]*)</td><td>([\d,]+)</td>", llm)}
    assert rows["questions"] == ("questions", "openai/fake", "4") and rows["answers"][2] == "3"
    metrics = json.loads((fresh_run / "metrics.json").read_text())
    assert f"<td>{metrics['questions']['llm']['prompt_tokens']:,}</td>" in llm
    settings = _section(page, "Sampling settings")
    assert "<b>greedy+rep1.1</b>" in settings and "repetition_penalty 1.1 over the last 20 tokens" in settings
    assert "<b>greedy</b>" in settings and "no repetition penalty" in settings
    scores = _section(page, "Evaluation: base vs tuned")
    assert "<td>format_gap</td><td>greedy</td>" in scores and "<td>format_gap</td><td>greedy+rep1.1</td>" in scores
    assert "<dt>format_gap</dt>" in scores and "<dt>length_ratio</dt>" in scores and "<dt>colours</dt>" in scores
    probes = _section(page, "Probes")
    assert probes.count("<tr>") == 1 + 3 and "missing: paris" in probes  # header + the three built-in probes
    assert len(re.findall(r">(pass|fail)</span>", probes)) == 6


def test_show_counts_every_source_video(fresh_run: Path) -> None:
    result = CliRunner().invoke(main, ["show", str(fresh_run)])
    assert result.exit_code == 0, result.output
    assert "videos   3/4 with kept rows (none: sleep_and_stress)" in result.output
    assert re.search(r"_plain\s+greedy: temperature 0, .*no repetition penalty", result.output)
    data = json.loads(CliRunner().invoke(main, ["show", str(fresh_run), "--json"]).output)
    sleep = next(v for v in data["coverage"] if v["video_id"] == "sleep_and_stress")
    assert (sleep["questions"], sleep["answers"], sleep["kept"], sleep["train"]) == (0, 0, 0, 0)


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
def test_the_report_of_a_fresh_run_as_a_browser_reads_it(fresh_run: Path, tmp_path: Path) -> None:
    """The DOM chromium builds from the page (not our own parser): every section, the table cells."""
    dom = subprocess.run(
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
            "--dump-dom",
            (fresh_run / "report.html").as_uri(),
        ],
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    headings = re.findall(r"<h2>([^<]*)</h2>", dom)
    assert headings[:3] == ["Steps", "Dataset", "Coverage per video"]
    assert {"Rows left out", "LLM calls", "Sampling settings", "Evaluation: base vs tuned", "Probes"} <= set(headings)
    assert "sleep_and_stress" in _section(dom, "Coverage per video")
    assert dom.count("<img ") == 2  # the histograms and the loss curves


def _section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start : end if end > 0 else len(page)]
