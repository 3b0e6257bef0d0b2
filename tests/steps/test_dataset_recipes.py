"""Dataset sources through the step graph: mixed with transcripts against the fake OpenAI server,
and the bundled dataset demo (recipes/demo_dataset.yaml) up to split."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

import engine.llm.client as llm
from engine.inspect.show import item_problems
from engine.pipeline.runner import Paths, RunResult, run_recipe
from engine.steps.base import RunOptions
from fakes.openai_server import FakeOpenAI
from helpers.pipeline import CASES, pipeline_model

ROOT = Path(__file__).resolve().parents[2]
QUIET = RunOptions(quiet=True)

MIXED = """name: mixed
creator: {{name: Dr. Test}}
sources:
  - {{type: local, path: transcripts}}
  - type: dataset
    path: data/qa.jsonl
    columns: {{question: prompt, answer: response, group: episode}}
llm: {{model: openai/fake, api_base: "{base_url}", reask: 0}}
filters: {{answer_length: {{min: 40}}}}
split: {{valid: 0.3, seed: 1}}
"""

DATASET = [
    # same group as a local transcript: the split must keep them together
    {
        "prompt": "Does insulin rise after every meal?",
        "response": "**Mostly, yes.** Refined carbohydrates raise it the most; fat barely moves it at all.",
        "episode": "insulin",
    },
    {
        "prompt": "How long should an overnight fast last?",
        "response": "Twelve hours is an easy start: close the kitchen after dinner and eat breakfast at eight.",
        "episode": "ds-fasting",
    },
    {
        "prompt": "What does ghrelin do?",
        "response": "Ghrelin is the hunger hormone; it rises on schedule before your usual meals and then falls.",
        "episode": "ds-hunger",
    },
    {"prompt": "An orphan row?", "response": "   ", "episode": "ds-hunger"},
]


def table(result: RunResult, name: str) -> list[dict]:
    with duckdb.connect(str(result.run_dir / "data.duckdb"), read_only=True) as con:
        cur = con.execute(f'SELECT * FROM "{name}"')
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def paths_in(tmp_path: Path) -> Paths:
    return Paths(runs_dir=tmp_path / "runs", store=tmp_path / "runs" / "store.duckdb")


def assert_no_group_in_two_splits(split_rows: list[dict]) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = defaultdict(set)
    for r in split_rows:
        if r["status"] == "ok":
            sides[r["video_id"]].add(r["split"])
    assert all(len(s) == 1 for s in sides.values()), {g: s for g, s in sides.items() if len(s) > 1}
    return sides


def test_a_dataset_mixes_with_local_transcripts_and_skips_the_llm_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)
    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in DATASET), encoding="utf-8")
    with FakeOpenAI(pipeline_model) as srv:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(MIXED.format(base_url=srv.base_url), encoding="utf-8")
        result = run_recipe(recipe, paths_in(tmp_path), until="split", options=QUIET)
        calls = srv.calls
    assert calls == 6  # 3 transcripts x (questions + answers); the dataset asked nothing
    assert {r["video_id"] for r in table(result, "transcripts")} == {"breakfast", "fasting_basics", "insulin"}
    answers = table(result, "answers")
    from_llm = [a for a in answers if a["model"] == "openai/fake"]
    from_data = {a["question"]: a for a in answers if a["model"] is None}
    assert len(from_llm) == 6 and all(a["prompt_digest"] for a in from_llm)
    assert set(from_data) == {d["prompt"] for d in DATASET[:3]}  # the blank answer stayed behind in sources
    assert from_data["What does ghrelin do?"]["answer"] == DATASET[2]["response"]
    assert all(a["status"] == "ok" and a["prompt_digest"] is None for a in from_data.values())
    sources = {r["question"]: r for r in table(result, "sources") if r["source"] == "dataset"}
    assert sources["An orphan row?"]["reason"] == "no answer (row 4 of data/qa.jsonl)"
    curated = {r["question"]: r for r in table(result, "curate")}
    assert set(from_data) <= set(curated) and len(curated) == 9  # one table: generated and existing rows
    sides = assert_no_group_in_two_splits(table(result, "split"))
    assert {"insulin", "ds-fasting", "ds-hunger"} <= set(sides)
    insulin = {r["split"] for r in table(result, "split") if r["video_id"] == "insulin"}
    assert len(insulin) == 1
    assert {"Does insulin rise after every meal?"} <= {r["question"] for r in table(result, "split")}


PLANTED_DUPLICATES = {
    frozenset({"Does caffeine in the afternoon affect my sleep?", "Does caffeine in the afternoon affect sleep?"}),
    frozenset({"How many steps a day should I aim for?", "How many steps per day should I aim for?"}),
    frozenset({"Which foods have the most fiber?", "Which foods have the most fibre?"}),
}


def test_the_dataset_demo_drops_what_was_planted_and_keeps_groups_whole(tmp_path: Path) -> None:
    recipe = ROOT / "recipes" / "demo_dataset.yaml"
    result = run_recipe(recipe, paths_in(tmp_path), until="split", options=QUIET)
    assert result.executed == ["sources", "transcripts", "questions", "answers", "curate", "augment", "split"]
    sources = [r for r in table(result, "sources") if r["source"] == "dataset"]
    assert len(sources) >= 60 and len({r["video_id"] for r in sources}) >= 10
    dropped = sorted(r["reason"].split(" (row ")[0] for r in sources if r["status"] == "dropped")
    assert (
        dropped == ["no answer", "no question"] + ["title matches title_exclude '(?i)\\\\bconversation with\\\\b'"] * 2
    )
    assert all(r["reason"].endswith("of demo_dataset/qa.jsonl)") for r in sources if r["status"] == "dropped")
    curate = table(result, "curate")
    by_id = {r["id"]: r for r in curate}
    duplicates = {
        frozenset({r["question"], by_id[r["duplicate_of"]]["question"]}) for r in curate if r["reason"] == "duplicate"
    }
    assert duplicates == PLANTED_DUPLICATES
    others = {r["question"]: r["reason"] for r in curate if r["status"] != "ok" and r["reason"] != "duplicate"}
    assert list(others) == ["Does magnesium help with sleep?"] and "repeat" in others["Does magnesium help with sleep?"]
    # `recipe show` counts every drop by its reason
    problems = item_problems(result.run_dir)
    assert problems["sources"]["dropped: no answer"] == 1 and problems["sources"]["dropped: no question"] == 1
    assert problems["curate"]["dropped: duplicate"] == 3
    split = table(result, "split")
    sides = assert_no_group_in_two_splits(split)
    assert "coach_rivera" not in sides and len(sides) >= 10
    assert {s for r in split for s in [r["split"]]} == {"train", "valid", "test"}
