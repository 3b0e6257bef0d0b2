"""Fuse finds a hub model's files through huggingface_hub's public snapshot API (not mlx-lm's
private `_download`): a model in the Hugging Face cache is found offline, a missing one is an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FIND = "import sys; from engine.models.fuse import model_folder; print(model_folder(sys.argv[1]))"


def hub_cache_with(model: Path, cache: Path, repo: str) -> Path:
    """The layout huggingface_hub keeps: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / COMMIT
    shutil.copytree(model, snapshot)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    return snapshot


def find_offline(spec: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", FIND, spec], env=env, capture_output=True, text=True, timeout=120, cwd=cache.parent
    )


def test_a_cached_hub_model_is_found_offline(tiny_llama: Path, tmp_path: Path) -> None:
    snapshot = hub_cache_with(tiny_llama, tmp_path / "hub", "acme/tiny-llama")
    found = find_offline("acme/tiny-llama", tmp_path / "hub")
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == snapshot
    assert (snapshot / "config.json").is_file()


def test_a_hub_model_not_in_the_cache_fails_offline(tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    found = find_offline("acme/not-downloaded", tmp_path / "hub")
    assert found.returncode != 0
    assert "LocalEntryNotFoundError" in found.stderr and "outgoing traffic has been disabled" in found.stderr


def test_a_local_folder_is_used_as_is(tiny_llama: Path) -> None:
    from engine.models.fuse import model_folder

    assert model_folder(tiny_llama) == tiny_llama
    assert model_folder(str(tiny_llama)) == tiny_llama
