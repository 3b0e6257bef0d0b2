"""The whole engine through train and export: a fake LLM writes the data, a tiny llama is trained,
and the run folder gets adapters/, loss.png, model/, model.gguf, Modelfile and the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.pipeline import run_pipeline


def test_run_until_export_fills_the_run_folder(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf

    result = run_pipeline(
        tmp_path,
        monkeypatch,
        until="export",
        extra_yaml=f"""train:
  model: {tiny_llama}
  learning_rate: 3.0e-3
  iters: 6
  batch_size: 2
  max_seq_length: 256
  steps_per_report: 2
  steps_per_eval: 3
  lora: {{rank: 4, layers: 2}}
export: {{gguf: {{type: f16}}}}
""",
    )
    assert result.executed[-2:] == ["train", "export"]
    run = result.run_dir
    for name in (
        "adapters/adapters.safetensors",
        "adapters/adapter_config.json",
        "loss.png",
        "train_log.txt",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model.gguf",
        "Modelfile",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    train = metrics["train"]
    assert [p["iteration"] for p in train["train_loss"]] == [2, 4, 6]
    assert train["best_val_loss"] is not None and train["wall_time_s"] > 0
    assert metrics["export"]["gguf"]["status"] == "ok"
    fields = gguf.GGUFReader(str(run / "model.gguf")).fields
    assert fields["general.name"].contents() == "pipeline"
    assert 'SYSTEM """You are Dr. Test."""' in (run / "Modelfile").read_text()
