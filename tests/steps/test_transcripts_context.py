"""A transcript longer than the reading model's context is cut into windows that fit, with a
warning naming the video, before anything is sent; the room it has keys the transcripts step."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import duckdb
import pytest

from engine.pipeline.runner import Paths, plan_recipe, run_recipe
from engine.sources.chunking import estimate_tokens
from engine.steps.base import RunOptions
from fakes.openai_server import FakeOpenAI

QUIET = RunOptions(quiet=True)
WORDS = "fasting insulin hormone body fat meal sugar the a of and to is in that it we you liver".split()


def _talk(path: Path, words: int, seed: int = 1) -> None:
    """Paragraphs of lecture-like words, `words` in all, numbered so coverage can be checked."""
    rng, paragraphs, n = random.Random(seed), [], 0
    while n < words:
        k = min(rng.randint(40, 120), words - n)
        paragraphs.append(" ".join(f"{rng.choice(WORDS)}{n + i}" for i in range(k)) + ".")
        n += k
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")


def _recipe(root: Path, extra: str = "") -> Path:
    recipe = root / "recipe.yaml"
    recipe.write_text(f"name: c\ncreator: {{name: Dr. Test}}\nsources: [{{type: local, path: talks}}]\n{extra}")
    return recipe


def _pieces(run_dir: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(run_dir / "data.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT video_id, chunk, text, status, reason FROM transcripts ORDER BY 1, 2").fetchall()
    out: dict[str, list[tuple]] = {}
    for video, *rest in rows:
        out.setdefault(video, []).append(tuple(rest))
    return out


def test_a_5mb_transcript_is_cut_to_fit_the_model_with_a_warning(tmp_path: Path, paths: Paths) -> None:
    """The issue's case: 683,280 words in `mode: whole` for gpt-4o-mini (128k tokens)."""
    (tmp_path / "talks").mkdir()
    _talk(tmp_path / "talks" / "marathon.txt", 683_280)
    _talk(tmp_path / "talks" / "short.txt", 800, seed=2)
    result = run_recipe(_recipe(tmp_path), paths, until="transcripts", options=QUIET)
    pieces = _pieces(result.run_dir)
    assert len(pieces["short"]) == 1  # what fits stays whole
    log = (result.run_dir / "run.log").read_text()
    room = int(re.search(r"which leaves ~(\d+) tokens for the transcript", log).group(1))
    assert 100_000 < room < int((128_000 - 4096) * 0.85)  # less the reply and the prompt, with headroom
    texts = [text for _, text, status, _ in pieces["marathon"]]
    assert len(texts) >= 683_280 * 1.3 / room and all(estimate_tokens(t) <= room for t in texts)
    assert texts[0].split()[0].endswith("0") and texts[-1].rstrip(".").split()[-1].endswith("683279")
    assert (
        "marathon (marathon): ~888264 tokens do not fit one prompt: the answers pass's model openai/gpt-4o-mini" in log
    )
    assert f"cut into {len(texts)} windows" in log
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["transcripts"]
    assert metrics["cut_to_fit"] == {"marathon": len(texts)}


def test_no_prompt_sent_exceeds_the_context_of_an_unknown_model(
    tmp_path: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """openai/fake is unknown to litellm: the conservative 8192 applies, and every prompt the
    questions pass really sends fits it with room for the reply."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (tmp_path / "talks").mkdir()
    _talk(tmp_path / "talks" / "long.txt", 12_000)
    _talk(tmp_path / "talks" / "brief.txt", 500, seed=3)
    prompts: list[str] = []

    def questions(body: dict) -> str:
        prompts.append("\n".join(m["content"] for m in body["messages"]))
        return json.dumps({"questions": [{"question": "What does fasting do to insulin levels?", "tags": []}]})

    with FakeOpenAI(questions) as srv:
        llm = f'llm: {{model: openai/fake, api_base: "{srv.base_url}", max_tokens: 1000, reask: 0}}\n'
        result = run_recipe(_recipe(tmp_path, llm), paths, until="questions", options=QUIET)
    pieces = _pieces(result.run_dir)
    assert len(pieces["brief"]) == 1 and len(pieces["long"]) > 1
    assert len(prompts) == len(pieces["long"]) + 1  # one request per piece, none refused
    assert max(estimate_tokens(p) for p in prompts) + 1000 <= 8192


def test_no_room_at_all_fails_each_video_before_any_call(
    tmp_path: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (tmp_path / "talks").mkdir()
    _talk(tmp_path / "talks" / "one.txt", 300)
    with FakeOpenAI(lambda body: "{}") as srv:
        llm = f'llm: {{model: openai/fake, api_base: "{srv.base_url}", max_tokens: 8000, reask: 0}}\n'
        result = run_recipe(_recipe(tmp_path, llm), paths, until="questions", options=QUIET)
        assert srv.calls == 0
    [(_, _, status, reason)] = _pieces(result.run_dir)["one"]
    assert status == "failed" and reason.startswith(
        "no room in the context: the answers pass's model openai/fake reads 8192 tokens"
    )
    assert reason.endswith("leaves no room for the transcript after the prompt and max_tokens; lower max_tokens")


def test_the_room_keys_the_step_and_the_model_name_does_not(tmp_path: Path, paths: Paths) -> None:
    (tmp_path / "talks").mkdir()
    _talk(tmp_path / "talks" / "one.txt", 300)

    def transcripts_key(extra: str) -> str:
        return plan_recipe(_recipe(tmp_path, extra), paths, until="transcripts").step("transcripts").key

    base = transcripts_key("llm: {model: openai/fake-a}\n")
    assert transcripts_key("llm: {model: openai/fake-b}\n") == base  # same (default) context: nothing reruns
    assert transcripts_key("llm: {model: openai/fake-a, max_tokens: 2000}\n") != base  # more room
    told = "llm: {model: openai/fake-a}\ntranscripts: {chunking: {context_tokens: 32768}}\n"
    assert transcripts_key(told) != base


JA = "断食はインスリンを下げ、体は蓄えた脂肪を燃やします。"  # 26 characters, no spaces


def test_text_without_spaces_is_counted_by_character_and_cut_between_cues(tmp_path: Path, paths: Paths) -> None:
    """A Japanese lecture as subtitles: a 'word' is a whole cue, so word counts would call an hour
    of speech a few thousand tokens. It is cut between cues into windows that fit; a Chinese
    text with no break at all cannot be cut and fails, naming why, before any call."""
    (tmp_path / "talks").mkdir()
    cues = [f"{i // 60:02}:{i % 60:02}.000 --> {i // 60:02}:{i % 60:02}.900\n{JA}{i}\n" for i in range(1200)]
    (tmp_path / "talks" / "kouen.vtt").write_text("WEBVTT\n\n" + "\n".join(f"00:{c}" for c in cues), encoding="utf-8")
    (tmp_path / "talks" / "wall.txt").write_text("断食" * 20_000, encoding="utf-8")
    told = "transcripts: {chunking: {context_tokens: 8192}}\n"
    result = run_recipe(_recipe(tmp_path, told), paths, until="transcripts", options=QUIET)
    pieces = _pieces(result.run_dir)
    log = (result.run_dir / "run.log").read_text()
    room = int(re.search(r"which leaves ~(\d+) tokens for the transcript", log).group(1))
    kouen = [text for _, text, status, _ in pieces["kouen"]]
    assert estimate_tokens(" ".join(kouen)) > 1200 * len(JA)  # a token per character at least
    assert len(kouen) > 10 and all(estimate_tokens(t) <= room for t in kouen)
    assert kouen[0].startswith(JA + "0") and kouen[-1].endswith(JA + "1199")
    [(_, _, status, reason)] = pieces["wall"]
    assert status == "failed" and reason.startswith("does not fit the context: a piece of ~40002 tokens cannot be cut")
