"""The whole engine through train and export: a fake LLM writes the data, a tiny llama is trained,
and the run folder gets adapters/, loss.png, model/, model.gguf, Modelfile and the metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_models_train import tiny_llama  # noqa: F401
from test_split import pipeline_model


def test_run_until_export_fills_the_run_folder(tiny_llama: Path, tmp_path: Path,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    import engine.llm as llm
    from engine.run import Paths, run_recipe
    from engine.steps.base import RunOptions
    from fakes.openai_server import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)
    shutil.copytree(Path(__file__).parent / "cases" / "engine_transcripts", tmp_path / "transcripts")
    paths = Paths(runs_dir=tmp_path / "runs", store=tmp_path / "runs" / "store.duckdb")
    with FakeOpenAI(pipeline_model) as srv:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(f"""name: pipeline
creator: {{name: Dr. Test}}
sources: [{{type: local, path: transcripts}}]
llm: {{model: openai/fake, api_base: "{srv.base_url}", reask: 0}}
augment: {{paraphrases: 1}}
split: {{valid: 0.3, seed: 1, system_prompt: "You are {{creator}}."}}
train:
  model: {tiny_llama}
  learning_rate: 3.0e-3
  iters: 6
  batch_size: 2
  max_seq_length: 256
  steps_per_report: 2
  steps_per_eval: 3
  lora: {{rank: 4, layers: 2}}
export: {{gguf: {{type: f16}}}}
""")
        result = run_recipe(recipe, paths, until="export", options=RunOptions(quiet=True))
    assert result.executed[-2:] == ["train", "export"]
    run = result.run_dir
    for name in ("adapters/adapters.safetensors", "adapters/adapter_config.json", "loss.png", "train_log.txt",
                 "model/model.safetensors", "model/tokenizer.json", "model.gguf", "Modelfile"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    train = metrics["train"]
    assert [p["iteration"] for p in train["train_loss"]] == [2, 4, 6]
    assert train["best_val_loss"] is not None and train["wall_time_s"] > 0
    assert metrics["export"]["gguf"]["status"] == "ok"
    fields = gguf.GGUFReader(str(run / "model.gguf")).fields
    assert fields["general.name"].contents() == "pipeline"
    assert 'SYSTEM """You are Dr. Test."""' in (run / "Modelfile").read_text()
