"""Local transcript files: every format, clean-up, chunking, malformed files, the demo recipe."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from engine.errors import MalformedTranscript
from engine.pipeline.runner import Paths, run_recipe
from engine.sources.chunking import chunk_segments, estimate_tokens
from engine.sources.formats import clean_segments, parse_file
from engine.steps.base import RunOptions

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recipes" / "demo"
QUIET = RunOptions(quiet=True)


def transcripts_table(run_dir: Path) -> dict[str, list[dict]]:
    with duckdb.connect(str(run_dir / "data.duckdb"), read_only=True) as con:
        cur = con.execute("SELECT * FROM transcripts ORDER BY video_id, chunk")
        cols = [d[0] for d in cur.description]
        out: dict[str, list[dict]] = {}
        for row in cur.fetchall():
            out.setdefault(row[0], []).append(dict(zip(cols, row, strict=True)))
        return out


# -- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "fasting_basics.txt",
        "insulin.vtt",
        "breakfast.srt",
        "hunger_waves.json",
        "metabolic_rate.json3",
        "insulin_resistance.vtt",
    ],
)
def test_demo_files_parse_clean_with_timestamps(name: str) -> None:
    segments = clean_segments(parse_file(DEMO / name), True, True, True)
    text = " ".join(s["text"] for s in segments)
    assert 600 <= len(text.split()) <= 1500
    assert "[Music]" not in text and "<c>" not in text and "-->" not in text
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    if not name.endswith(".txt"):
        assert starts[-1] > 200  # a lecture of several minutes, timings kept
    assert "Lindqvist" in text or "insulin" in text.lower() or "hunger" in text.lower()


def test_srt_cue_numbers_are_not_text(tmp_path: Path) -> None:
    srt = tmp_path / "a.srt"
    srt.write_text(
        "1\n00:00:00,000 --> 00:00:02,500\nFirst line\n\n2\n00:00:02,500 --> 00:01:04,000\nSecond line\nstill second\n"
    )
    assert parse_file(srt) == [
        {"start": 0.0, "duration": 2.5, "text": "First line"},
        {"start": 2.5, "duration": 61.5, "text": "Second line still second"},
    ]


def test_rolling_auto_captions_merge_into_one_pass() -> None:
    segments = clean_segments(parse_file(DEMO / "insulin_resistance.vtt"), True, True, True)
    raw = clean_segments(parse_file(DEMO / "insulin_resistance.vtt"), True, False, True)
    merged = " ".join(s["text"] for s in segments)
    assert merged.startswith("Okay, welcome back. Today is insulin resistance, which I promised")
    assert merged.count("Okay, welcome back.") == 1
    assert len(" ".join(s["text"] for s in raw).split()) > 2 * len(merged.split())  # rolled lines repeat


def test_merge_keeps_a_natural_single_word_repeat() -> None:
    segs = [
        {"start": 0.0, "duration": 1.0, "text": "we eat"},
        {"start": 1.0, "duration": 1.0, "text": "eat less often"},
    ]
    assert [s["text"] for s in clean_segments(segs, True, True, True)] == ["we eat", "eat less often"]


def test_cues_are_stripped_only_when_asked() -> None:
    segs = [{"start": 0.0, "duration": 1.0, "text": "[Music]  so   [Applause] okay"}]
    assert clean_segments(segs, True, True, True)[0]["text"] == "so okay"
    assert clean_segments(segs, False, True, False)[0]["text"] == "[Music]  so   [Applause] okay"


@pytest.mark.parametrize(
    ("content", "name", "reason"),
    [
        (b"", "empty.vtt", "empty file"),
        (b"   \n\n", "blank.txt", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.srt", "binary file (NUL bytes)"),
        (b"WEBVTT\n\n00:00:01.000 --> 00:00:xx.000\nbroken\n", "badtime.vtt", "bad timestamp line"),
        (b"00:00:01.000 --> 00:00:02.000\nno header\n", "noheader.vtt", "missing WEBVTT header"),
        (b"WEBVTT\n\nNOTE only a note\n", "nocues.vtt", "no cues found"),
        (b"caf\xe9 au lait", "latin1.txt", "not UTF-8 text"),
        (b'{"foo": 1}', "odd.json", "unknown JSON transcript shape"),
        (b'[{"text": "a"', "cut.json", "invalid JSON"),
        (b'{"events": [{"tStartMs": 0}]}', "nosegs.json3", "no text in any segment"),
    ],
)
def test_malformed_files_raise_with_reason(tmp_path: Path, content: bytes, name: str, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MalformedTranscript) as info:
        parse_file(path)
    assert info.value.reason.startswith(reason) and info.value.path == path


def test_malformed_local_files_are_rows_not_crashes(
    tmp_path: Path, paths: Paths, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "transcripts"
    shutil.copytree(ROOT / "tests" / "cases" / "engine_transcripts", folder)
    (folder / "empty.vtt").write_bytes(b"")
    (folder / "binary.srt").write_bytes(b"\x00\x01\x02garbage")
    (folder / "broken.vtt").write_text("WEBVTT\n\n00:00:01.000 -> 00:00:02.000\ntext\n00:0x --> 1\n")
    (folder / "insulin.meta.json").write_text("{not json")  # a broken sidecar is ignored, not fatal
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: t\ncreator:\n  name: Dr. Test\nsources:\n  - type: local\n    path: transcripts\n")
    result = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    rows = {v: r[0] for v, r in transcripts_table(result.run_dir).items()}
    assert {v: r["status"] for v, r in rows.items()} == {
        "breakfast": "ok",
        "fasting_basics": "ok",
        "insulin": "ok",
        "empty": "failed",
        "binary": "failed",
        "broken": "failed",
    }
    assert rows["empty"]["reason"] == "malformed file: transcripts/empty.vtt: empty file"
    assert rows["binary"]["reason"].startswith("malformed file: transcripts/binary.srt: binary file (NUL bytes)")
    assert rows["broken"]["reason"].startswith("malformed file: transcripts/broken.vtt: bad timestamp line")
    assert rows["insulin"]["title"] == "insulin"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["transcripts"]
    assert metrics["read"] == 3 and metrics["failed"] == {"malformed file": 3}
    log = (result.run_dir / "run.log").read_text()
    assert "failed empty: malformed file: transcripts/empty.vtt: empty file" in log
    assert "insulin.meta.json: ignoring invalid metadata" in caplog.text  # reported while listing


# -- chunking ----------------------------------------------------------------------------------


def _segments(n_words: int, per_segment: int = 10) -> list[dict]:
    words = [f"w{i}" for i in range(n_words)]
    return [
        {"start": float(i), "duration": 1.0, "text": " ".join(words[i * per_segment : (i + 1) * per_segment])}
        for i in range((n_words + per_segment - 1) // per_segment)
    ]


def test_whole_is_one_piece_whatever_the_length() -> None:
    pieces = chunk_segments(_segments(5000), "whole", 100, 10)
    assert len(pieces) == 1 and len(pieces[0]["text"].split()) == 5000
    assert (pieces[0]["start"], pieces[0]["end"]) == (0.0, 500.0)


def test_token_windows_overlap_and_cover_everything() -> None:
    pieces = chunk_segments(_segments(1000), "tokens", window_tokens=260, overlap_tokens=26)
    windows = [p["text"].split() for p in pieces]
    assert all(estimate_tokens(p["text"]) <= 260 for p in pieces)
    assert [len(w) for w in windows[:-1]] == [200] * (len(windows) - 1)
    for a, b in itertools.pairwise(windows):
        assert a[-20:] == b[:20]  # 26 tokens ~ 20 words shared
    assert windows[0][0] == "w0" and windows[-1][-1] == "w999"
    assert pieces[1]["start"] == 18.0 and pieces[1]["segments"][0]["start"] == 18.0  # timestamps follow


def test_short_video_is_not_split() -> None:
    assert len(chunk_segments(_segments(50), "tokens", 260, 26)) == 1


def test_demo_recipe_reads_six_lectures_and_chunks_on_request(tmp_path: Path, paths: Paths) -> None:
    result = run_recipe(ROOT / "recipes" / "demo.yaml", paths, until="transcripts", options=QUIET)
    rows = transcripts_table(result.run_dir)
    assert len(rows) == 6 and all(len(r) == 1 and r[0]["status"] == "ok" for r in rows.values())
    assert rows["hunger_waves"][0]["title"] == "Hunger comes in waves"  # from the sidecar
    assert all(600 <= r[0]["words"] <= 1500 for r in rows.values())

    shutil.copytree(DEMO, tmp_path / "demo")
    recipe = tmp_path / "chunked.yaml"
    recipe.write_text(
        "name: c\ncreator:\n  name: Dr. Maya Lindqvist\nsources:\n  - type: local\n    path: demo\n"
        "transcripts:\n  chunking:\n    mode: tokens\n    window_tokens: 400\n    overlap_tokens: 40\n"
    )
    chunked = transcripts_table(run_recipe(recipe, paths, until="transcripts", options=QUIET).run_dir)
    insulin = chunked["insulin"]
    assert [r["chunk"] for r in insulin] == [0, 1, 2]
    assert insulin[1]["start_time"] > insulin[0]["start_time"] and insulin[1]["segments"]


def test_token_estimates_count_characters_of_unspaced_scripts() -> None:
    assert estimate_tokens("insulin lowers blood sugar") == 6  # 4 words x 1.3
    assert estimate_tokens("断食は体に良い") == 2 + 7  # one 'word', seven characters
    assert estimate_tokens("단식은 몸에 좋다") == 4 + 7  # Korean spaces words, each syllable costs too
    windows = chunk_segments(
        [{"start": float(i), "duration": 1.0, "text": "断食" * 10} for i in range(50)], "tokens", 100, 0
    )
    assert [len(w["segments"]) for w in windows] == [4] * 12 + [2]  # 21.3 tokens a cue: 4 fit in 100
    assert all(estimate_tokens(w["text"]) <= 100 for w in windows)
