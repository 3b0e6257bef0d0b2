"""Parsers for local transcript files -> segments {start, duration, text}."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.errors import ItemFailed

TIMING = re.compile(r"(\d+:)?(\d{1,2}):(\d{2})[.,](\d{3})\s*-->\s*(\d+:)?(\d{1,2}):(\d{2})[.,](\d{3})")
TAG = re.compile(r"<[^>]+>")  # inline timing/style tags of auto-caption vtt
CUE = re.compile(r"\[(music|applause|laughter|inaudible)[^\]]*\]|\((laughs|music)\)", re.I)


class MalformedTranscript(ItemFailed):
    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


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
    segments, current = [], None
    for line in text.splitlines():
        match = TIMING.search(line)
        if match:
            g = match.groups()
            start, end = _seconds(*g[:4]), _seconds(*g[4:])
            current = {"start": start, "duration": max(0.0, end - start), "text": ""}
            segments.append(current)
        elif "-->" in line:
            raise MalformedTranscript(path, f"bad timestamp line: {line.strip()!r}")
        elif current is not None and line.strip():
            current["text"] = (current["text"] + " " + TAG.sub("", line.strip())).strip()
    if not segments:
        raise MalformedTranscript(path, "no cues found")
    return segments


def parse_file(path: Path, fmt: str = "auto") -> list[dict]:
    fmt = path.suffix.lower().lstrip(".") if fmt == "auto" else fmt
    text = read_text(path)
    if fmt == "vtt" and not text.lstrip().startswith("WEBVTT"):
        raise MalformedTranscript(path, "missing WEBVTT header")
    if fmt in ("vtt", "srt"):
        return parse_cues(path, text)
    if fmt in ("json", "json3"):
        return _parse_json(path, text)
    return [{"start": 0.0, "duration": 0.0, "text": p.strip()} for p in re.split(r"\n\s*\n", text) if p.strip()]


def _parse_json(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MalformedTranscript(path, f"invalid JSON ({e})") from None
    if isinstance(data, dict) and "events" in data:  # yt-dlp json3
        return [{"start": e.get("tStartMs", 0) / 1000, "duration": e.get("dDurationMs", 0) / 1000,
                 "text": "".join(s.get("utf8", "") for s in e.get("segs", []))}
                for e in data["events"] if e.get("segs")]
    if isinstance(data, list):  # youtube-transcript-api
        return [{"start": float(s["start"]), "duration": float(s.get("duration", 0)), "text": s["text"]} for s in data]
    raise MalformedTranscript(path, "unknown JSON transcript shape")


def clean_segments(segments: list[dict], strip_cues: bool, merge_overlaps: bool,
                   normalize_whitespace: bool) -> list[dict]:
    out: list[dict] = []
    for seg in segments:
        text = CUE.sub("", seg["text"]) if strip_cues else seg["text"]
        text = " ".join(text.split()) if normalize_whitespace else text
        if merge_overlaps and out and text and out[-1]["text"].endswith(text):
            continue  # auto-captions repeat the previous line as they roll
        if text:
            out.append({**seg, "text": text})
    return out
