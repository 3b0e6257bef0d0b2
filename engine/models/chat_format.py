"""The model's Jinja chat template, read as a turn format Ollama's Go templates can reproduce.

Ollama fills a Modelfile TEMPLATE (Go text/template) with `.Messages`: every message of the
chat, the Modelfile's SYSTEM prepended as a system message when the chat has none, consecutive
same-role messages merged. `.System` holds the system text *again* (it is also in `.Messages`),
so a template must use one or the other, never both. Go templates have no string functions
(no trim, no replace), so only formats that wrap each message in fixed text can be reproduced.

Rather than matching template source text, the chat template is rendered (jinja2, configured
like transformers' apply_chat_template) on probe conversations with marker contents; the text
around the markers gives each role's prefix and suffix, the generation prompt, a leading BOS and
a default system block (SmolLM2 adds one when the chat has no system message). The result is
then checked against the Jinja output on more conversations; any mismatch means the format is
not one we can express, and the caller falls back to the template stored in the GGUF.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")
# Marker contents: plain ASCII that no template adds, so each is found exactly once.
_S, _U1, _A1, _U2 = "QZsys7QZ", "QZusr1QZ", "QZast1QZ", "QZusr2QZ"
_BOS = "QZbosQZ"  # stands for bos_token, to tell the template's {{ bos_token }} from text that starts like it


@dataclass(frozen=True)
class ChatFormat:
    """A turn format: each message is prefix[role] + content + suffix[role]."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str  # what add_generation_prompt appends
    start: str  # text before everything (a literal BOS), "" if none
    default_system: str  # the block the template inserts when the chat opens without a system message
    trims: bool  # the template strips whitespace around message contents (Go templates cannot)

    def render(self, messages: list[dict[str, str]], with_start: bool = True) -> str:
        """What the format gives for `messages` (with the generation prompt): the reference the
        Go template is built to produce, and what derive() checks against the Jinja output."""
        out = [self.start if with_start else ""]
        for i, m in enumerate(messages):
            if i == 0 and m["role"] != "system":
                out.append(self.default_system)
            content = m["content"].strip() if self.trims else m["content"]
            out += [self.prefix[m["role"]], content, self.suffix[m["role"]]]
        return "".join(out) + self.generation


def render_chat(
    chat_template: str, messages: list[dict[str, str]], tokens: dict[str, str], add_generation_prompt: bool = True
) -> str:
    """The chat template applied as transformers does (trim_blocks, lstrip_blocks, loop controls,
    the tokenizer's special tokens as variables)."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, ensure_ascii=False, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(chat_template)
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **tokens)


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _cut(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError(f"{text!r} does not start with {prefix!r}")
    return text[len(prefix) :]


def _cut_end(text: str, suffix: str) -> str:
    if not text.endswith(suffix):
        raise ValueError(f"{text!r} does not end with {suffix!r}")
    return text[: len(text) - len(suffix)] if suffix else text


def _segments(text: str, markers: list[str]) -> list[str]:
    """The text between the markers, which must each appear once, in order."""
    parts, rest = [], text
    for marker in markers:
        if rest.count(marker) != 1:
            raise ValueError(f"marker {marker!r} not found once")
        before, rest = rest.split(marker)
        parts.append(before)
    return parts + [rest]


def _split_ending(closed: str, opened: str) -> tuple[str, str]:
    """(suffix, generation prompt) from what follows the last message without and with the
    generation prompt. Some templates end a closed chat with EOS (Phi-3): the suffix is then
    the part both endings share, up to its last line break (`<|end|>\n<|` would split a token)."""
    if opened.startswith(closed):
        return closed, opened[len(closed) :]
    shared = os.path.commonprefix([closed, opened])
    if "\n" in shared:
        shared = shared[: shared.rindex("\n") + 1]
    return shared, opened[len(shared) :]


def _probe(chat_template: str, tokens: dict[str, str]) -> ChatFormat:
    """Read the pieces off the rendered probe conversations (ValueError when they do not fit)."""

    def render(messages: list[dict[str, str]], gen: bool) -> str:
        return render_chat(chat_template, messages, {**tokens, "bos_token": _BOS}, gen)

    u1, a1 = _msg("user", _U1), _msg("assistant", _A1)
    head, closed = _segments(render([u1], False), [_U1])
    user_suffix, generation = _split_ending(closed, _segments(render([u1], True), [_U1])[1])
    between, closed = _segments(render([u1, a1], False), [_U1, _A1])[1:]
    assistant_suffix = _split_ending(closed, _segments(render([u1, a1], True), [_U1, _A1])[2])[0]
    assistant_prefix = _cut(between, user_suffix)
    full = render([_msg("system", _S), u1, a1, _msg("user", _U2)], True)
    c0, c1, c2, c3, c4 = _segments(full, [_S, _U1, _A1, _U2])
    user_prefix = _cut(c3, assistant_suffix)
    if c2 != user_suffix + assistant_prefix or c4 != user_suffix + generation:
        raise ValueError("user/assistant turns differ between probes")
    system_suffix = _cut_end(c1, user_prefix)
    start = _BOS if c0.startswith(_BOS) and head.startswith(_BOS) else ""

    def real(text: str) -> str:  # a bos_token used anywhere else is plain text of the turn
        return text.replace(_BOS, tokens.get("bos_token", ""))

    return ChatFormat(
        prefix={"system": real(c0[len(start) :]), "user": real(user_prefix), "assistant": real(assistant_prefix)},
        suffix={"system": real(system_suffix), "user": real(user_suffix), "assistant": real(assistant_suffix)},
        generation=real(generation),
        start=real(start),
        default_system=real(_cut_end(head, user_prefix)[len(start) :]),
        trims=False,
    )


# Conversations the derived format must reproduce exactly: multi-turn, with and without a system
# message, contents with newlines, braces (Go and Jinja syntax), quotes and non-ASCII text.
CHECKS: tuple[tuple[dict[str, str], ...], ...] = (
    (_msg("user", "Hi"),),
    (_msg("system", "You are Dr. Fung.\nAnswer briefly."), _msg("user", "What is {{ .System }} {% raw %}?")),
    (
        _msg("system", 'Quote: "fast" — é 😀'),
        _msg("user", "Is fasting safe?"),
        _msg("assistant", "Mostly.\n\nAsk your doctor."),
        _msg("user", "And for kids?"),
    ),
    (
        _msg("user", "One"),
        _msg("assistant", "Two"),
        _msg("user", "Three"),
        _msg("assistant", "<b>four</b>"),
        _msg("user", "Five"),
    ),
)
PADDED = (_msg("system", "  padded system\n"), _msg("user", "\n padded user "))


def derive(chat_template: str | None, tokens: dict[str, str]) -> ChatFormat | None:
    """The turn format of `chat_template`, or None when it is not one fixed text per role (or
    the template fails on plain conversations). `tokens`: bos_token, eos_token, ... as the
    template sees them (the tokenizer's)."""
    from jinja2.exceptions import TemplateError

    if not chat_template:
        return None
    try:
        fmt = _probe(chat_template, tokens)
        if any(fmt.render(list(c)) != render_chat(chat_template, list(c), tokens) for c in CHECKS):
            return None
        padded = render_chat(chat_template, list(PADDED), tokens)
    except (TemplateError, ValueError, TypeError, KeyError, IndexError):
        return None
    if padded == fmt.render(list(PADDED)):
        return fmt
    trimming = ChatFormat(**{**fmt.__dict__, "trims": True})
    return trimming if padded == trimming.render(list(PADDED)) else None
