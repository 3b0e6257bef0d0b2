"""Parsers for local transcript files -> segments {start, duration, text}."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine.errors import MalformedTranscript

TIMING = re.compile(r"(\d+:)?(\d{1,2}):(\d{2})[.,](\d{3})\s*-->\s*(\d+:)?(\d{1,2}):(\d{2})[.,](\d{3})")
TAG = re.compile(r"<[^>]+>")  # inline timing/style tags of auto-caption vtt
CUE = re.compile(r"\[(music|applause|laughter|inaudible)[^\]]*\]|\((laughs|music)\)", re.I)


def _seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int((h or "0:")[:-1]) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def read_text(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise MalformedTranscript(path, "empty file")
    if b"\x00" in data:
        raise MalformedTranscript(path, "binary file (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MalformedTranscript(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def parse_cues(path: Path, text: str) -> list[dict]:
    """WebVTT and SRT: timing lines followed by text lines."""
    segments: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _is_cue_number(line, lines[i + 1] if i + 1 < len(lines) else ""):
            continue
        match = TIMING.search(line)
        if match:
            g = match.groups()
            start, end = _seconds(*g[:4]), _seconds(*g[4:])
            current = {"start": start, "duration": round(max(0.0, end - start), 3), "text": ""}
            segments.append(current)
        elif "-->" in line:
            raise MalformedTranscript(path, f"bad timestamp line: {line.strip()!r}")
        elif current is not None and line.strip():
            current["text"] = (current["text"] + " " + TAG.sub("", line.strip())).strip()
    if not segments:
        raise MalformedTranscript(path, "no cues found")
    return segments


def _is_cue_number(line: str, following: str) -> bool:
    """SRT numbers its cues (a VTT cue may carry an id): a line right before a timing line."""
    return bool(line.strip()) and "-->" not in line and TIMING.search(following) is not None


def parse_file(path: Path, fmt: str = "auto") -> list[dict]:
    fmt = path.suffix.lower().lstrip(".") if fmt == "auto" else fmt
    return parse_text(path, read_text(path), fmt)


def parse_text(path: Path, text: str, fmt: str) -> list[dict]:
    """Segments of transcript text in `fmt` (also used for subtitles yt-dlp downloads)."""
    if fmt == "vtt" and not text.lstrip().startswith("WEBVTT"):
        raise MalformedTranscript(path, "missing WEBVTT header")
    if fmt in ("vtt", "srt"):
        segments = parse_cues(path, text)
    elif fmt in ("json", "json3"):
        segments = _parse_json(path, text)
    else:
        segments = [{"start": 0.0, "duration": 0.0, "text": p.strip()} for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not any(s["text"].strip() for s in segments):
        raise MalformedTranscript(path, "no text in any segment")
    return segments


def _parse_json(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MalformedTranscript(path, f"invalid JSON ({e})") from None
    if isinstance(data, dict) and "events" in data:  # yt-dlp json3
        # events without segs are window/style events; "\n" segs are line breaks of rolling captions
        return [
            {
                "start": e.get("tStartMs", 0) / 1000,
                "duration": e.get("dDurationMs", 0) / 1000,
                "text": "".join(s.get("utf8", "") for s in e["segs"]).replace("\n", " "),
            }
            for e in data["events"]
            if isinstance(e, dict) and e.get("segs")
        ]
    if isinstance(data, list) and all(isinstance(s, dict) and "text" in s and "start" in s for s in data):
        # youtube-transcript-api's to_raw_data(): [{text, start, duration}]
        return [
            {"start": float(s["start"]), "duration": float(s.get("duration") or 0), "text": str(s["text"])}
            for s in data
        ]
    raise MalformedTranscript(path, "unknown JSON transcript shape")


def clean_segments(
    segments: list[dict], strip_cues: bool, merge_overlaps: bool, normalize_whitespace: bool
) -> list[dict]:
    out: list[dict] = []
    for seg in segments:
        text = CUE.sub("", seg["text"]) if strip_cues else seg["text"]
        text = " ".join(text.split()) if normalize_whitespace else text
        if merge_overlaps and out and text:
            text = _without_overlap(out[-1]["text"], text)
        if text:
            out.append({**seg, "text": text})
    return out


def _without_overlap(previous: str, text: str, min_words: int = 3) -> str:
    """Drop the words `text` repeats from the end of `previous`.

    Auto-captions roll: each cue starts with the line before it, and a 10 ms cue repeats the
    whole line. A repeat must cover the whole cue or at least `min_words` words, so a manual
    caption that happens to start with the word its neighbour ended on is left alone.
    """
    prev_words, words = previous.split(), text.split()
    for k in range(min(len(prev_words), len(words)), 0, -1):
        if prev_words[-k:] == words[:k] and (k >= min_words or k == len(words)):
            return " ".join(words[k:])
    return text
