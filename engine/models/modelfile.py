"""An Ollama Modelfile next to the GGUF: template matching the chat format, stop tokens, system prompt."""

from __future__ import annotations

CHATML = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
LLAMA3 = (
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def ollama_template(chat_template: str | None) -> tuple[str | None, list[str]]:
    """(Go template, stop tokens) for the chat formats we recognise; (None, []) lets Ollama
    fall back to the template it reads from the GGUF metadata."""
    text = chat_template or ""
    if "<|im_start|>" in text:
        return CHATML, ["<|im_start|>", "<|im_end|>"]
    if "<|start_header_id|>" in text:
        return LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    return None, []


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(gguf_name: str, chat_template: str | None, system: str | None, temperature: float | None = None) -> str:
    template, stops = ollama_template(chat_template)
    lines = [f"FROM ./{gguf_name}"]
    if template:
        lines.append(f"TEMPLATE {_quoted(template)}")
    else:
        lines.append("# chat format not recognised: Ollama uses the template stored in the GGUF")
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"
