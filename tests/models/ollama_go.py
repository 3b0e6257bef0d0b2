"""Read a Modelfile's values as Ollama's parser does."""

from __future__ import annotations

import re


def modelfile_values(text: str) -> dict[str, str]:
    """TEMPLATE and SYSTEM as Ollama's parser reads them: the text between triple quotes, kept
    as is (it drops non-printable characters, so the values must have none)."""
    values = {}
    for command in ("TEMPLATE", "SYSTEM"):
        match = re.search(rf'^{command} """(.*?)"""$', text, re.DOTALL | re.MULTILINE)
        if match:
            value = match.group(1)
            assert all(ch.isprintable() or ch in "\n\r\t" for ch in value), f"{command} has characters Ollama drops"
            values[command] = value
    return values
