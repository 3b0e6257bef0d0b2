"""Hostile transcript files (tests/cases/hostile_transcripts) through the real sources and
transcripts steps: each bad file is one failed row naming the file and what is wrong, the
valid ones in odd encodings are read, documents and folders are listed as skipped, and the run
completes."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from engine.errors import MalformedTranscript
from engine.pipeline.runner import Paths, run_recipe
from engine.sources.formats import parse_file
from engine.steps.base import RunOptions

CORPUS = Path(__file__).resolve().parents[1] / "cases" / "hostile_transcripts"

# file -> what its failed row's reason must say (after "malformed file: <path>: ")
FAILS = {
    "events_int.json3": '"events" is a number, expected a list',
    "events_ints.json3": "no text in any segment",
    "segs_int.json3": 'event 0: "segs" is not a list of objects',
    "segs_string.json3": 'event 0: "segs" is not a list of objects',
    "segs_numbers.json3": 'event 0: "segs" is not a list of objects',
    "utf8_number.json3": 'event 0: a "utf8" text is not a string',
    "tstart_word.json3": 'event 0: "tStartMs" is "soon", expected a time',
    "events_object.json3": '"events" is an object, expected a list',
    "wrapped_events.json3": "unknown JSON transcript shape (an object)",
    "list_of_ints.json": "unknown JSON transcript shape (a list)",
    "bare_string.json": "unknown JSON transcript shape (a string)",
    "null.json": "unknown JSON transcript shape (null)",
    "empty_list.json": "unknown JSON transcript shape (a list)",
    "text_number.json": 'segment 0: "text" is a number, expected a string',
    "text_null.json": 'segment 0: "text" is null, expected a string',
    "text_list.json": 'segment 0: "text" is a list, expected a string',
    "start_word.json": 'segment 0: "start" is "abc", expected a time',
    "start_nan.json": 'segment 0: "start" is NaN, expected a time',
    "start_negative.json": 'segment 0: "start" is -5, expected a time',
    "deep_nesting.json": "invalid JSON (nested too deeply)",
    "truncated.json": "invalid JSON (Unterminated string",
    "vtt_garbage_time.vtt": "bad timestamp line 3: '99:99:99.999 --> aa:bb:cc.ddd'",
    "vtt_huge_hours.vtt": "bad timestamp line 3: '99999",
    "vtt_header_only.vtt": "no cues found",
    "vtt_no_header.vtt": "missing WEBVTT header",
    "vtt_cues_no_text.vtt": "no text in any segment",
    "srt_garbage_time.srt": "bad timestamp line 2",
    "srt_numbers_only.srt": "no cues found",
    "empty.txt": "empty file",
    "whitespace.md": "empty file",
    "bom_only.txt": "empty file",
    "nul_bytes.txt": "binary file (NUL bytes); if it is UTF-16 text, save it as UTF-8",
    "random_bytes.txt": "not UTF-8 text (invalid continuation byte at byte 0); save it as UTF-8",
    "control_chars.txt": "binary file (320 control characters)",
    "latin1.txt": "not UTF-8 text (invalid continuation byte at byte 3); save it as UTF-8",
}
READ = {  # valid transcripts in encodings other tools write -> their text
    "utf8_bom": "A byte-order mark is fine.",
    "utf16le_bom": "Saved by Notepad as Unicode: café.",
    "utf16be_bom": "Big-endian subtitles.",
    "utf16le_nobom": "No mark, still UTF-16.",
    "utf32_bom": "Four bytes a character.",
}
SKIPPED = {
    "folder.txt": "a folder, not a file",
    "slides.pdf": "not a transcript format (.pdf)",
    "notes.docx": "not a transcript format (.docx)",
}


def test_the_corpus_is_what_the_test_expects() -> None:
    names = {p.name for p in CORPUS.iterdir()}
    assert names == set(FAILS) | {f"{s}.{e}" for s, e in _read_names()} | set(SKIPPED) | {"cues_only.txt"}


def _read_names() -> list[tuple[str, str]]:
    return [(p.stem, p.suffix[1:]) for p in CORPUS.iterdir() if p.stem in READ]


@pytest.mark.parametrize("name", sorted(FAILS))
def test_each_bad_file_raises_malformed_with_its_reason(name: str) -> None:
    with pytest.raises(MalformedTranscript) as info:
        parse_file(CORPUS / name)
    assert info.value.reason.startswith(FAILS[name]) and info.value.path == CORPUS / name


def test_every_hostile_file_is_one_row_and_the_run_completes(tmp_path: Path, paths: Paths) -> None:
    shutil.copytree(CORPUS, tmp_path / "inbox")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: h\ncreator:\n  name: Dr. Test\nsources:\n  - type: local\n    path: inbox\n")
    result = run_recipe(recipe, paths, until="transcripts", options=RunOptions(quiet=True))
    assert result.status == "complete"
    with duckdb.connect(str(result.run_dir / "data.duckdb"), read_only=True) as con:
        sources = {r[0]: r[1:] for r in con.execute("SELECT video_id, status, reason, path FROM sources").fetchall()}
        rows = {r[0]: r[1:] for r in con.execute("SELECT video_id, status, reason, text FROM transcripts").fetchall()}

    for name, why in SKIPPED.items():
        status, reason, path = sources[name]
        assert (status, path) == ("skipped", f"inbox/{name}") and reason.startswith(why)
    for name, why in FAILS.items():
        status, reason, _ = rows[Path(name).stem] if Path(name).stem in rows else (None, name, None)
        assert status == "failed", name
        assert reason.startswith(f"malformed file: inbox/{name}: {why}"), reason
    assert rows["cues_only"][:2] == ("failed", "empty after clean-up: inbox/cues_only.txt")
    for stem, text in READ.items():
        assert rows[stem][0] == "ok" and rows[stem][2] == text, stem
    assert len(rows) == len(FAILS) + len(READ) + 1  # one row per file, none lost
