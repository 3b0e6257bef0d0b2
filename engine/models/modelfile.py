"""An Ollama Modelfile next to the GGUF: a TEMPLATE that renders like the model's chat template,
the training system prompt, stop strings and the evaluation's sampling as PARAMETER defaults.

How Ollama uses it (server/routes.go, server/prompt.go, template/template.go): a chat's
messages, the Modelfile SYSTEM prepended as a system message when the chat opens without one,
consecutive same-role messages merged, become `.Messages`; `.System` repeats the system text, so
the template below reads `.Messages` only. A template that names `.Messages` is executed once
over the whole chat; one that does not is run per turn with `.System`/`.Prompt`/`.Response` (the
legacy path, not used here). Literal text goes in as Go string literals: the Modelfile parser
drops non-printable characters and ends a value at three double quotes, and whitespace between actions is trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.models.chat_format import ROLES, ChatFormat

_ROLE = "\x00role\x00"  # stands for the role name while testing whether prefixes differ only by it


@dataclass(frozen=True)
class Sampling:
    """Ollama PARAMETER values (Ollama's names) and the comment that says where they come from."""

    values: tuple[tuple[str, float | int], ...]
    source: str


def go_literal(text: str) -> str:
    """`text` as a Go interpreted string literal with only printable ASCII inside."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _text(text: str) -> str:
    return "{{ " + go_literal(text) + " }}" if text else ""


def _shared_role_pattern(fmt: ChatFormat) -> tuple[str, str, str] | None:
    """(before role, after role, suffix) when every role's wrapping differs only by its name
    (ChatML, Llama 3): the template then serves any role, tool messages included."""
    patterns = {fmt.prefix[r].replace(r, _ROLE, 1) for r in ROLES}
    suffixes = {fmt.suffix[r] for r in ROLES}
    if len(patterns) != 1 or len(suffixes) != 1:
        return None
    pattern = patterns.pop()
    if pattern.count(_ROLE) != 1:
        return None
    before, after = pattern.split(_ROLE)
    return before, after, suffixes.pop()


def go_template(fmt: ChatFormat, tokenizer_adds_bos: bool) -> str:
    """The Go template that renders `.Messages` as `fmt` does (plus the generation prompt). A
    literal BOS is left out when the tokenizer adds one itself (it would be doubled)."""
    lines = [_text(fmt.start) if fmt.start and not tokenizer_adds_bos else ""]
    lines.append("{{- range $i, $m := .Messages }}")
    if fmt.default_system:
        lines.append('  {{- if and (eq $i 0) (ne $m.Role "system") }}' + _text(fmt.default_system) + "{{ end }}")
    shared = _shared_role_pattern(fmt)
    if shared:
        before, after, suffix = shared
        lines.append("  {{- " + go_literal(before) + " }}{{ $m.Role }}" + _text(after))
        lines.append("  {{- $m.Content }}" + _text(suffix))
    else:
        for n, role in enumerate(ROLES):
            keyword = "if" if n == 0 else "else if"
            body = _text(fmt.prefix[role]) + "{{ $m.Content }}" + _text(fmt.suffix[role])
            lines.append(f'  {{{{- {keyword} eq $m.Role "{role}" }}}}{body}')
        lines.append("  {{- end }}")
    lines.append("{{- end }}")
    if fmt.generation:
        lines.append("{{- " + go_literal(fmt.generation) + " }}")
    return "\n".join(line for line in lines if line)


def stop_strings(fmt: ChatFormat) -> list[str]:
    """Where an answer ends: the assistant turn's closing text, or the next user turn opening."""
    stops = [fmt.suffix["assistant"].strip(), fmt.prefix["user"].strip()]
    return [s for i, s in enumerate(stops) if s and s not in stops[:i]]


def _quoted(text: str) -> str:
    return '"""' + text + '"""'


def modelfile_safe(text: str) -> bool:
    """Whether Ollama's Modelfile parser keeps `text` as written inside triple quotes: it drops
    non-printable characters and ends the value at the first closing triple quote."""
    return '"""' not in text and all(ch.isprintable() or ch in "\n\r\t" for ch in text)


def modelfile(
    gguf_name: str,
    fmt: ChatFormat | None,
    system: str | None,
    sampling: Sampling | None = None,
    tokenizer_adds_bos: bool = False,
) -> str:
    lines = [f"FROM ./{gguf_name}"]
    if fmt is None:
        lines.append("# chat format not recognised: Ollama uses the chat template stored in the GGUF")
    else:
        lines.append("# TEMPLATE renders .Messages exactly as the model's chat template does (the same text)")
        if fmt.trims:
            lines.append("# (except that the chat template trims spaces around each message; Go templates cannot)")
        lines.append(f"TEMPLATE {_quoted(go_template(fmt, tokenizer_adds_bos))}")
    if system and modelfile_safe(system):
        lines.append(f"SYSTEM {_quoted(system)}")
    elif system:
        lines.append("# the training system prompt has characters a Modelfile cannot hold; pass it as a system message")
    lines += [f'PARAMETER stop "{s}"' for s in (stop_strings(fmt) if fmt else [])]
    if sampling:
        lines += [f"# {line}" for line in sampling.source.splitlines()]
        lines += [f"PARAMETER {name} {value:g}" for name, value in sampling.values]
    return "\n".join(lines) + "\n"
