"""Resolving paths written in a recipe (relative to the recipe file)."""

from __future__ import annotations

import glob
from pathlib import Path

TRANSCRIPT_SUFFIXES = (".txt", ".md", ".vtt", ".srt", ".json", ".json3")


def local_transcript_files(base_dir: Path, pattern: str) -> list[Path]:
    """Transcript files named by a local source: a file, a directory, or a glob.

    Directories are read non-recursively; sidecar metadata (`*.meta.json`) is never a
    transcript. Sorted so the listing (and therefore the step key) is stable.
    """
    root = Path(pattern).expanduser()
    root = root if root.is_absolute() else base_dir / root
    if root.is_dir():
        candidates = [p for p in root.iterdir() if p.is_file()]
    elif any(ch in pattern for ch in "*?["):
        candidates = [Path(p) for p in glob.glob(str(root), recursive=True) if Path(p).is_file()]
    else:
        candidates = [root] if root.is_file() else []
    return sorted(
        p for p in candidates if p.suffix.lower() in TRANSCRIPT_SUFFIXES and not p.name.endswith(".meta.json")
    )
