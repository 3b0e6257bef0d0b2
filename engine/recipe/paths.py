"""Resolving paths written in a recipe (relative to the recipe file)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

TRANSCRIPT_SUFFIXES = (".txt", ".md", ".vtt", ".srt", ".json", ".json3")


@dataclass(frozen=True)
class SourceFiles:
    """What a local source names: transcript files to read, and everything else, with why not."""

    transcripts: list[Path]
    skipped: list[tuple[Path, str]]


def local_source_files(base_dir: Path, pattern: str) -> SourceFiles:
    """The entries a local source names, split into transcripts and skipped ones.

    Directories are read non-recursively; sidecar metadata (`*.meta.json`) belongs to its
    transcript and hidden files (.DS_Store) to the system, so neither is listed at all. Sorted
    so the listing (and therefore the step key) is stable.
    """
    root = Path(pattern).expanduser()
    root = root if root.is_absolute() else base_dir / root
    if root.is_dir():
        candidates = list(root.iterdir())
    elif any(ch in pattern for ch in "*?["):
        candidates = [Path(p) for p in glob.glob(str(root), recursive=True)]
    else:
        candidates = [root] if root.is_file() else []
    transcripts, skipped = [], []
    for path in sorted(p for p in candidates if not p.name.startswith(".") and not p.name.endswith(".meta.json")):
        why = _not_a_transcript(path)
        if why is None:
            transcripts.append(path)
        else:
            skipped.append((path, why))
    return SourceFiles(transcripts, skipped)


def _not_a_transcript(path: Path) -> str | None:
    if path.is_dir():
        return "a folder, not a file (folders inside a source are not read; use a glob such as `dir/**/*.vtt`)"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in TRANSCRIPT_SUFFIXES:
        kind = path.suffix.lower() or "no extension"
        return f"not a transcript format ({kind}); transcripts are {' '.join(TRANSCRIPT_SUFFIXES)}"
    return None


def shown_path(path: Path, base_dir: Path, pattern: str) -> str:
    """How a listed file is recorded: relative to the recipe's folder when the source was written
    relative to it (so a copied project finds its files), as written when it was absolute."""
    if Path(pattern).expanduser().is_absolute():
        return str(path)
    return os.path.relpath(path, base_dir)


def locate(recorded: str, base_dir: Path) -> Path:
    """The file a recorded path (see shown_path) names, for a recipe in `base_dir`."""
    path = Path(recorded)
    return path if path.is_absolute() else base_dir / path
