"""Parsers for local transcript files -> segments {start, duration, text}.

Every file a user drops in a source folder is untrusted: whatever is wrong with it (encoding,
shape, types, timings) raises MalformedTranscript with the reason, never a TypeError, so the
transcripts step turns it into one failed row and goes on with the rest.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from pathlib import Path
from typing import Any

from engine.errors import MalformedTranscript

TIMING = re.compile(r"(\d{1,6}:)?(\d{1,2}):(\d{2})[.,](\d{3})\s*-->\s*(\d{1,6}:)?(\d{1,2}):(\d{2})[.,](\d{3})")
TAG = re.compile(r"<[^>]+>")  # inline timing/style tags of auto-caption vtt
CUE = re.compile(r"\[(music|applause|laughter|inaudible)[^\]]*\]|\((laughs|music)\)", re.I)
# C0 controls other than tab/newline/carriage return/form feed: no transcript has them, binaries do
CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int((h or "0:")[:-1]) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def read_text(path: Path) -> str:
    """The file's text: UTF-8, or UTF-16/32 when a byte-order mark (or the NUL pattern of
    BOM-less UTF-16, as Windows tools write it) says so; anything else fails with the fix."""
    try:
        data = path.read_bytes()
    except OSError as e:  # a folder named x.txt, no permission, removed since it was listed
        raise MalformedTranscript(path, f"cannot read it ({e.strerror or e})") from None
    if not data.strip():
        raise MalformedTranscript(path, "empty file")
    encoding, body = _encoding(data)
    if encoding is None:
        raise MalformedTranscript(path, "binary file (NUL bytes); if it is UTF-16 text, save it as UTF-8")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as e:
        raise MalformedTranscript(
            path, f"not {encoding.upper()} text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise MalformedTranscript(path, "empty file")
    controls = len(CONTROL.findall(text))
    if controls > max(2, len(text) // 1000):  # a stray control character is noise; many are a binary
        raise MalformedTranscript(path, f"binary file ({controls} control characters)")
    return text


def _encoding(data: bytes) -> tuple[str | None, bytes]:
    """(codec, bytes without the BOM); codec None for a binary file."""
    for bom, name in BOMS:
        if data.startswith(bom):
            return name, data[len(bom) :]
    if b"\x00" not in data:
        return "utf-8", data
    even, odd = data[0::2], data[1::2]
    # ASCII-range text in UTF-16 has a NUL in (nearly) every other byte and none in the rest
    if len(data) % 2 == 0 and odd.count(0) > 0.9 * len(odd) and even.count(0) == 0:
        return "utf-16-le", data
    if len(data) % 2 == 0 and even.count(0) > 0.9 * len(even) and odd.count(0) == 0:
        return "utf-16-be", data
    return None, data


def parse_cues(path: Path, text: str) -> list[dict]:
    """WebVTT and SRT: timing lines followed by text lines."""
    segments: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _is_cue_number(line, lines[i + 1] if i + 1 < len(lines) else ""):
            continue
        match = TIMING.match(line.strip())  # a timing line starts with its timestamp
        if match:
            g = match.groups()
            start, end = _seconds(*g[:4]), _seconds(*g[4:])
            current = {"start": start, "duration": round(max(0.0, end - start), 3), "text": ""}
            segments.append(current)
        elif "-->" in line:
            raise MalformedTranscript(path, f"bad timestamp line {i + 1}: {line.strip()[:80]!r}")
        elif current is not None and line.strip():
            current["text"] = (current["text"] + " " + TAG.sub("", line.strip())).strip()
    if not segments:
        raise MalformedTranscript(path, "no cues found")
    return segments


def _is_cue_number(line: str, following: str) -> bool:
    """SRT numbers its cues (a VTT cue may carry an id): a line right before a timing line."""
    return bool(line.strip()) and "-->" not in line and TIMING.match(following.strip()) is not None


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
    except RecursionError:
        raise MalformedTranscript(path, "invalid JSON (nested too deeply)") from None
    if isinstance(data, dict) and "events" in data:  # yt-dlp json3
        return _json3_segments(path, data["events"])
    if isinstance(data, list) and data and all(isinstance(s, dict) and "text" in s and "start" in s for s in data):
        # youtube-transcript-api's to_raw_data(): [{text, start, duration}]
        return [_raw_segment(path, i, s) for i, s in enumerate(data)]
    raise MalformedTranscript(
        path,
        f"unknown JSON transcript shape ({_kind(data)}); expected yt-dlp json3 "
        '({"events": [...]}) or a list of {"text", "start", "duration"}',
    )


def _json3_segments(path: Path, events: Any) -> list[dict]:
    """yt-dlp json3 events. Events without segs are window/style events; "\n" segs are the line
    breaks of rolling captions."""
    if not isinstance(events, list):
        raise MalformedTranscript(path, f'"events" is {_kind(events)}, expected a list')
    segments = []
    for i, event in enumerate(events):
        if not isinstance(event, dict) or not event.get("segs"):
            continue
        segs = event["segs"]
        if not isinstance(segs, list) or not all(isinstance(s, dict) for s in segs):
            raise MalformedTranscript(path, f'event {i}: "segs" is not a list of objects')
        parts = [s.get("utf8", "") for s in segs]
        if not all(isinstance(p, str) for p in parts):
            raise MalformedTranscript(path, f'event {i}: a "utf8" text is not a string')
        start = _number(path, f"event {i}", "tStartMs", event.get("tStartMs", 0))
        duration = _number(path, f"event {i}", "dDurationMs", event.get("dDurationMs", 0))
        segments.append({"start": start / 1000, "duration": duration / 1000, "text": "".join(parts).replace("\n", " ")})
    return segments


def _raw_segment(path: Path, i: int, seg: dict) -> dict:
    if not isinstance(seg["text"], str):
        raise MalformedTranscript(path, f'segment {i}: "text" is {_kind(seg["text"])}, expected a string')
    start = _number(path, f"segment {i}", "start", seg["start"])
    duration = _number(path, f"segment {i}", "duration", seg.get("duration") or 0)
    return {"start": start, "duration": duration, "text": seg["text"]}


def _number(path: Path, where: str, name: str, value: Any) -> float:
    """A finite, non-negative time (numbers written as strings are accepted)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise MalformedTranscript(path, f'{where}: "{name}" is {json.dumps(value)[:40]}, expected a time')
    return number


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


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
