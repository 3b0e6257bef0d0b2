"""Small HTML pieces the report's sections share: escaped tables and numbers."""

from __future__ import annotations

import html
from typing import Any


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table; cells are HTML already (escape text with `esc` or `num`)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><tr>{head}</tr>{body}</table>"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def num(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def count(v: Any) -> str:
    """A count with thousands separators; — when unknown."""
    return "—" if v is None else f"{v:,}" if isinstance(v, int) else num(v)
