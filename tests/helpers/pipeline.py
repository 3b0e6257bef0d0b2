"""The engine end to end on the three small test transcripts, with a fake LLM playing every pass.

Used by the split test (until split) and the models test (until export): both need the same data.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

CASES = Path(__file__).resolve().parent.parent / "cases"

QUESTIONS = {
    "breakfast": ["Is skipping the morning meal harmful?", "Why do cereals leave me starving by ten?"],
    "fasting": ["Can an overnight fast burn stored fat?", "What should a first fasting day look like?"],
    "insulin": ["What does insulin do after a meal?", "Why is insulin called the storage hormone?"],
}

BASE_RECIPE = """name: pipeline
creator: {{name: Dr. Test}}
sources: [{{type: local, path: transcripts}}]
llm: {{model: openai/fake, api_base: "{base_url}", reask: 0}}
augment: {{paraphrases: 1}}
split: {{valid: 0.3, seed: 1, system_prompt: "You are {{creator}}."}}
"""


def pipeline_model(body: dict) -> str:
    """Plays every pass of the pipeline, keyed on the default prompts."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    if "List the questions" in prompt:
        title = re.search(r'titled "([^"]*)"', prompt).group(1).lower()
        key = next(k for k in QUESTIONS if k in title)
        return json.dumps({"questions": [{"question": q, "tags": [key]} for q in QUESTIONS[key]]})
    if "Questions:\n" in prompt:
        block = prompt.split("Questions:\n", 1)[1].split("\n\nTranscript:", 1)[0]
        numbers = re.findall(r"^(\d+)\. ", block, re.M)
        return json.dumps(
            {
                "answers": [
                    {
                        "number": int(n),
                        "answer": (
                            f"**Short answer {n}:** the body keeps its own schedule.\n\nWhen you eat at the same "
                            "hours, your hormones learn the pattern and prepare for food, which is why it feels so "
                            "regular."
                        ),
                    }
                    for n in numbers
                ]
            }
        )
    if prompt.startswith("Rewrite this question"):
        question = prompt.split("Question: ")[1]
        return json.dumps({"paraphrases": [f"Put simply, {question[0].lower()}{question[1:]}"]})
    return "{}"


def run_pipeline(tmp_path: Path, monkeypatch: Any, until: str, extra_yaml: str = "") -> Any:
    """Run the base recipe (plus `extra_yaml` sections) against the fake LLM; returns the RunResult."""
    import engine.llm.client as llm
    from engine.pipeline.runner import Paths, run_recipe
    from engine.steps.base import RunOptions
    from fakes.openai_server import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)
    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    paths = Paths(runs_dir=tmp_path / "runs", store=tmp_path / "runs" / "store.duckdb")
    with FakeOpenAI(pipeline_model) as srv:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(BASE_RECIPE.format(base_url=srv.base_url) + extra_yaml, encoding="utf-8")
        return run_recipe(recipe, paths, until=until, options=RunOptions(quiet=True))
