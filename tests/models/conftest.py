"""Fixtures of the model tests: Go's text/template, filled as Ollama fills it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

RENDERER = Path(__file__).parent / "ollama_render"


@pytest.fixture(scope="session")
def go_render(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A function rendering [{template, system, messages}] -> prompts; skips without Go."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install golang-go): the Ollama TEMPLATE render needs text/template")
    binary = tmp_path_factory.mktemp("go") / "ollama_render"
    env = dict(os.environ)
    if not any(key in env for key in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):  # Go needs a build cache
        env["GOCACHE"] = str(tmp_path_factory.mktemp("gocache"))
    subprocess.run([go, "build", "-o", str(binary), "main.go"], cwd=RENDERER, env=env, check=True)

    def render(requests: list[dict]) -> list[str]:
        done = subprocess.run(
            [str(binary)], input=json.dumps(requests), capture_output=True, text=True, check=False, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return render
