"""Interface 3 on a tiny llama: load_model specs, batched chat generation, assistant-only loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_models_train import QA, TRAIN, chat, recipe_with

from engine.errors import RecipeError


def test_load_model_resolves_folders_relative_paths_and_packages(tiny_llama: Path, tmp_path: Path) -> None:
    import mlx.core as mx

    from engine.models.resolve import load_model, package_file, resolve_model_path

    model, tokenizer = load_model(tiny_llama.name, tmp_path / "models", base_dir=tiny_llama.parent)
    assert model.layers[0].self_attn.q_proj.weight.dtype == mx.float32
    assert tokenizer.eos_token_ids == {2}
    assert package_file("package:engine/models/blas.py").name == "blas.py"
    with pytest.raises(RecipeError, match="not installed"):
        resolve_model_path("package:no_such_pkg_xyz/m.gguf", tmp_path)
    with pytest.raises(RecipeError, match="not found inside package"):
        resolve_model_path("package:engine/missing.gguf", tmp_path)
    with pytest.raises(RecipeError, match="no such folder"):
        resolve_model_path("./nowhere/at/all", tmp_path)


def test_chat_generate_is_batched_ordered_and_deterministic(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.models.generate import chat_generate
    from engine.models.resolve import load_model

    model, tokenizer = load_model(str(tiny_llama), tmp_path)
    conversations = [[{"role": "user", "content": q}] for q, _ in QA[:5]]
    greedy = chat_generate(model, tokenizer, conversations, max_tokens=6, batch_size=2)
    assert len(greedy) == 5 and all(isinstance(r, str) for r in greedy)
    # Batching does not change greedy answers: each one equals its single-prompt run.
    assert [chat_generate(model, tokenizer, [c], max_tokens=6)[0] for c in conversations] == greedy
    sampled = chat_generate(
        model, tokenizer, conversations, max_tokens=6, temperature=1.0, seed=3, repetition_penalty=1.3
    )
    assert sampled == chat_generate(
        model, tokenizer, conversations, max_tokens=6, temperature=1.0, seed=3, repetition_penalty=1.3
    )
    assert sampled != greedy
    assert chat_generate(model, tokenizer, [], max_tokens=4) == []


def test_generate_each_mixes_limits_and_decodings_in_one_batch(tiny_llama: Path, tmp_path: Path) -> None:
    """Greedy, penalised and sampled rows with different limits decoded together: each greedy row
    is what chat_generate gives it alone, each limit holds, and the sampled rows repeat per seed."""
    import threading

    from engine.models.generate import GenerationRequest, GenerationStopped, chat_generate, generate_each
    from engine.models.resolve import load_model

    model, tokenizer = load_model(str(tiny_llama), tmp_path)
    conversations = [[{"role": "user", "content": q}] for q, _ in QA[:4]]
    requests = [
        *(GenerationRequest(c, 6) for c in conversations[:2]),
        GenerationRequest(conversations[2], 3, repetition_penalty=1.3, repetition_context_size=4),
        *(GenerationRequest(c, 8, temperature=1.0, repetition_penalty=1.3) for c in conversations),
    ]
    replies = generate_each(model, tokenizer, requests, seed=3)
    assert replies[:2] == chat_generate(model, tokenizer, conversations[:2], max_tokens=6)
    assert (
        replies[2]
        == chat_generate(
            model, tokenizer, [conversations[2]], max_tokens=3, repetition_penalty=1.3, repetition_context_size=4
        )[0]
    )
    assert (
        replies[2]
        != chat_generate(  # its own limit of 3 held while other rows went on to 6 and 8
            model, tokenizer, [conversations[2]], max_tokens=8, repetition_penalty=1.3, repetition_context_size=4
        )[0]
    )
    assert generate_each(model, tokenizer, requests, seed=3) == replies
    assert generate_each(model, tokenizer, requests, seed=4)[3:] != replies[3:]
    assert generate_each(model, tokenizer, requests, seed=3, batch_size=2)[:3] == replies[:3]  # greedy: any batching
    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationStopped):
        generate_each(model, tokenizer, requests, stop=stop)


def test_conversation_loss_counts_assistant_tokens_and_drops_after_training(tiny_llama: Path, tmp_path: Path) -> None:
    from engine.models.loss import assistant_spans, conversation_loss
    from engine.models.resolve import load_model
    from engine.models.train import train_adapter

    model, tokenizer = load_model(str(tiny_llama), tmp_path)
    conversations = [chat(q, a)["messages"] for q, a in QA]
    tokens, spans = assistant_spans(tokenizer, conversations[0])
    ((start, end),) = spans
    assert tokenizer.decode(tokens[start:end]).startswith(QA[0][1])  # the answer, not the prompt
    before = conversation_loss(model, tokenizer, conversations)
    assert before["tokens"] == sum(e - s for c in conversations for s, e in assistant_spans(tokenizer, c)[1])
    assert before["perplexity"] == pytest.approx(math.exp(before["loss"]))

    cfg = recipe_with({**TRAIN, "model": str(tiny_llama)}, tmp_path).train
    train_adapter(tiny_llama, [{"messages": c} for c in conversations], [], cfg, tmp_path / "ad", 3e-3, 12)
    tuned, _ = load_model(str(tiny_llama), tmp_path, adapter_path=tmp_path / "ad")
    after = conversation_loss(tuned, tokenizer, conversations)
    assert after["tokens"] == before["tokens"] and after["loss"] < before["loss"] - 0.5


def test_model_fingerprint_changes_when_the_model_files_change(tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    from engine.models.resolve import model_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama, copy)
    before = model_fingerprint("copy", tmp_path)
    # content only: the same folder named relatively or absolutely is the same model
    assert before == model_fingerprint(str(copy)) and len(before["files"]) >= 4
    with open(copy / "config.json", "a") as f:
        f.write("\n")
    assert model_fingerprint("copy", tmp_path) != before
    assert model_fingerprint("owner/hub-model") == {"hub": "owner/hub-model"}


def test_model_fingerprint_ignores_timestamps_and_memoises_digests(tiny_llama: Path, tmp_path: Path) -> None:
    import os
    import shutil

    from engine.models.resolve import model_fingerprint
    from engine.pipeline.store import Store

    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama, copy)
    with Store(tmp_path / "store.duckdb") as store:
        memo = store.item_cache("file_digests")
        before = model_fingerprint(str(copy), None, memo)
        assert len(memo) == len(before["files"])  # one digest per file, remembered
        for f in copy.iterdir():  # a reinstall: same bytes, new timestamps
            os.utime(f, (1_000_000_000, 1_000_000_000))
        assert model_fingerprint(str(copy), None, memo) == before
        assert len(memo) == 2 * len(before["files"])  # re-hashed once under the new stat
