"""Shared fixtures: an isolated runs/ + store per test, and a small local-transcript recipe."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from engine.pipeline.runner import Paths

CASES = Path(__file__).parent / "cases"

# Tests never reach the internet and never write into the user's runs/ folder.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# A shell starts a background job (`pytest ... &`, a CI step's helper) with SIGINT ignored, and
# every process it starts inherits that: the CLI children of the Ctrl-C tests then never saw
# their SIGINT and ran on until the test gave up after 60 s (/proc/<pid>/status: SigIgn had
# SIGINT). Python's own handler is what a terminal gives them; exec resets it to the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_recipe_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's RECIPE_STORE, RECIPE_RUNS, RECIPE_DEBUG, RECIPE_MODEL_CACHE... never leak into a test.

    RECIPE_BLAS is kept: it picks the BLAS library mlx loads (speed only) and is read once per process.
    """
    for name in [n for n in os.environ if n.startswith("RECIPE_") and n != "RECIPE_BLAS"]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny llama (real BPE tokenizer) shared by every test that only reads it."""
    from helpers.tiny_model import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", seed=0)


@pytest.fixture()
def paths(tmp_path: Path) -> Paths:
    return Paths(runs_dir=tmp_path / "runs", store=tmp_path / "runs" / "store.duckdb")


LOCAL_RECIPE = """\
name: local-test
creator:
  name: Dr. Test
sources:
  - type: local
    path: transcripts
"""


@pytest.fixture()
def local_recipe(tmp_path: Path) -> Path:
    """A recipe over three small transcript files (txt, vtt, srt) copied into tmp_path."""
    folder = tmp_path / "transcripts"
    shutil.copytree(CASES / "engine_transcripts", folder)
    path = tmp_path / "recipe.yaml"
    path.write_text(LOCAL_RECIPE, encoding="utf-8")
    return path
