"""A recipe file's bytes as text: bounded in size, decoded, or a located problem.

A recipe is UTF-8. A byte-order mark is fine (Windows editors write one), and so are UTF-16 and
UTF-32 with their mark (Notepad's "Unicode"); a file without a mark is UTF-8 or an error at the
line and column of its first undecodable byte. A NUL byte means binary, or UTF-16 without a mark.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from engine.errors import Problem, RecipeError, RecipeInvalid, TextProblem

MAX_BYTES = 1_000_000  # a large real recipe is a few KB; a long eval list or video list fits easily
BOMS = (  # longest first: the UTF-32-LE mark starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_text(path: Path) -> str:
    """The file's text; a file too large, binary or in an unknown encoding is a located problem."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            message = f"the file is {size:,} bytes; a recipe may be at most {MAX_BYTES:,} bytes (1 MB)"
            raise RecipeInvalid([Problem(str(path), 1, 1, None, message)])
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # the file may have grown since stat()
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
    try:
        return decode(raw)
    except TextProblem as e:
        raise RecipeInvalid([Problem(str(path), e.line, e.col, None, e.message)]) from None


def decode(raw: bytes) -> str:
    """UTF-8 (with or without a byte-order mark), or UTF-16/32 with one; else a located TextProblem."""
    for bom, encoding in BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding).removeprefix("\ufeff")
            except UnicodeDecodeError as e:
                message = f"the file starts with a {encoding} byte-order mark but is not {encoding}: {e.reason}"
                raise TextProblem(1, 1, message) from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        line, col = _line_col(raw, nul)
        raise TextProblem(
            line, col, "a NUL byte: this is a binary file, or UTF-16 without a byte-order mark; save it as UTF-8"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _line_col(raw, e.start)
        raise TextProblem(
            line, col, f"byte 0x{raw[e.start]:02x} (byte offset {e.start}) is not UTF-8 text; save the file as UTF-8"
        ) from None


def _line_col(raw: bytes, offset: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - line_start + 1
