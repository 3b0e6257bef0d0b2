"""Secrets never leave the process: every message is scrubbed before it is logged, stored or printed.

Providers echo what they were sent: a 401 body that says `Incorrect API key provided: Bearer
sk-...`, a 500 that repeats the request headers, an HTTP library that prints the URL with its
`user:password@` or `?key=`. Those texts become exception messages, and exception messages end
up in run.log, manifest.json, the reason columns of step tables and on the console. So the
engine scrubs at its choke points (the exception classes of engine.errors, the log handlers,
the manifest's error field, the CLI's error edge, the rows a step writes), all with `redact`.

What is scrubbed:
- the value of every environment variable that holds a credential (names ending in _KEY,
  _API_KEY, _APIKEY, _TOKEN, _SECRET, _PASSWORD, plus litellm's other ones), replaced by
  `[REDACTED:NAME]` so a user still sees which key the provider rejected;
- well-known key shapes (`sk-...`, `hf_...`, `AIza...`, ...) and `Bearer`/`Basic` credentials;
- credentials inside URLs: `scheme://user:password@host` and `?api_key=` / `&key=` / `&token=`;
- `api_key=...`, `"x-api-key": "..."`, `password: ...` as printed by SDKs and header dumps.

Values shorter than MIN_SECRET_LENGTH are left alone: scrubbing `abc` would mangle ordinary
words and no real credential is that short. This module is the bottom layer with engine.errors:
it imports nothing of the engine, so every layer may use it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

MIN_SECRET_LENGTH = 8

# An environment variable whose name ends like this holds a credential (AWS_SECRET_ACCESS_KEY,
# OPENAI_API_KEY, HF_TOKEN, AZURE_CLIENT_SECRET, ...).
SECRET_NAME_SUFFIXES = ("_KEY", "_APIKEY", "_TOKEN", "_SECRET", "_PASSWORD", "_PASSWD")

# Credentials litellm reads whose names do not end like that.
KNOWN_SECRET_VARIABLES = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AZURE_CREDENTIAL",
        "GIGACHAT_CREDENTIALS",
        "VERTEXAI_CREDENTIALS",
        "VERTEX_CREDENTIALS",
        "WATSONX_APIKEY",
        "WATSONX_ZENAPIKEY",
    }
)

REDACTED = "[REDACTED]"

# Order matters: URLs first (their userinfo may hold a key shape), named fields before bare
# shapes so `api_key=sk-...` keeps its field name. Each keeps what tells the reader where the
# secret was and replaces only the secret.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host and scheme://token@host
    (re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^\s/?#@\"'<>\[\]]+@"), rf"\1{REDACTED}@"),
    # ?api_key=...&key=...&token=... in a query string
    (
        re.compile(
            r"([?&;](?:api[_-]?key|key|access[_-]?token|token|secret|password|passwd|sig|signature|auth)=)"
            r"(?!\[REDACTED)[^&#\s\"'<>]+",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # api_key='...', "x-api-key": "...", api-key: ..., password=..., client_secret: ...
    (
        re.compile(
            r"\b((?:x-)?(?:goog-)?api[_-]?key|access[_-]?token|client[_-]?secret|password|passwd)"
            r"([\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED)[^\s\"',;&}\]]{8,}",
            re.IGNORECASE,
        ),
        rf"\1\2{REDACTED}",
    ),
    # Authorization: Bearer <token> / Basic <base64>; a credential has a digit (a word does not)
    (
        re.compile(r"\b(Bearer|Basic)(\s+)(?=[A-Za-z._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE),
        rf"\1\2{REDACTED}",
    ),
    # well-known key shapes: OpenAI/Anthropic, Hugging Face, GitHub, Google, AWS, Slack
    (re.compile(r"(?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-]{16,}"), f"sk-…{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_\-])hf_[A-Za-z0-9]{30,}"), f"hf_…{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_\-])(gh[pousr]_)[A-Za-z0-9]{30,}"), rf"\1…{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}"), f"AIza…{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9])AKIA[0-9A-Z]{16}(?![A-Za-z0-9])"), f"AKIA…{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_\-])(xox[abprs]-)[A-Za-z0-9\-]{10,}"), rf"\1…{REDACTED}"),
)


def is_secret_variable(name: str) -> bool:
    """Whether an environment variable of this name holds a credential."""
    upper = name.upper()
    return upper in KNOWN_SECRET_VARIABLES or upper.endswith(SECRET_NAME_SUFFIXES)


def secret_values(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(value, variable name) of every credential in the environment, longest value first.

    Read on every call, not cached: a key set after startup (tests, a notebook) is still caught,
    and the environment is small. Longest first, so a key that contains another is replaced whole.
    """
    env = os.environ if environ is None else environ
    found = {
        value: name
        for name, value in sorted(env.items())
        if len(value.strip()) >= MIN_SECRET_LENGTH and is_secret_variable(name)
    }
    return sorted(found.items(), key=lambda item: -len(item[0]))


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every secret replaced (see the module docstring); idempotent."""
    if not text:
        return text
    for value, name in secret_values(environ):
        text = text.replace(value, f"[REDACTED:{name}]")
        stripped = value.strip()  # a key pasted with a trailing newline is sent without it
        if stripped != value:
            text = text.replace(stripped, f"[REDACTED:{name}]")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# The columns of step tables that carry messages (failure reasons, library errors).
MESSAGE_COLUMNS = ("reason", "error")


def redact_row(row: dict) -> dict:
    """A step's row with its message columns scrubbed (the same dict when there is nothing to do)."""
    dirty = [c for c in MESSAGE_COLUMNS if isinstance(row.get(c), str) and row[c]]
    if not dirty:
        return row
    return {**row, **{c: redact(row[c]) for c in dirty}}


def redact_json(data: Any) -> Any:
    """`data` (JSON-shaped) with every string scrubbed: the files a run writes (manifest,
    metrics) hold library messages that may echo a key. Strings, not the serialized text, so
    a replacement can never break the JSON."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: redact_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_json(value) for value in data]
    return data


class RedactSecrets(logging.Filter):
    """Scrubs secrets from every record a handler emits.

    On the handlers, not the logger: a logger's filter misses records from its children
    (engine.steps.questions, ...), a handler's sees them all. The message is rendered with its
    arguments first (a key is usually an argument), and a traceback is rendered to text so it
    is scrubbed too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text = redact(record.exc_text or logging.Formatter().formatException(record.exc_info))
            record.exc_info = None  # a handler would otherwise format the raw traceback again
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
