"""augment over real HTTP against the fake OpenAI server, then split: origins kept, no leaks, cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_curate import make_ctx, write_table

import engine.llm.client as llm
from engine.pipeline.store import Store
from engine.steps import augment, curate, split
from fakes.openai_server import FakeOpenAI

FRENCH = {"Why do we sleep?": "Pourquoi dormons-nous ?"}


@pytest.fixture(autouse=True)
def fake_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)


def curated(videos: int = 4, per_video: int = 2) -> list[dict]:
    rows = []
    for v in range(videos):
        for q in range(per_video):
            rows.append(
                {
                    "id": f"v{v}q{q}",
                    "video_id": f"v{v}",
                    "title": f"Talk {v}",
                    "question": f"Why does topic {q} of talk {v} matter?",
                    "answer": f"Because topic {q} of talk {v} changes **everything**.",
                    "tags": ["science"],
                    "score": None,
                    "quality": 50.0,
                    "duplicate_of": None,
                    "similarity": None,
                    "status": "ok",
                    "reason": None,
                }
            )
    rows.append({**rows[0], "id": "dup", "status": "dropped", "reason": "duplicate", "duplicate_of": "v0q0"})
    return rows


def responder(body: dict) -> str:
    """Plays the augmenting model, keyed on the default prompts' wording."""
    prompt = body["messages"][-1]["content"]
    text = prompt.rsplit("\n", 1)[-1]
    if prompt.startswith("Rewrite this question"):
        question = prompt.split("Question: ")[1]
        if "talk 3" in question:
            return "I cannot help with that."  # not JSON: the row fails, the run goes on
        # the model echoes the question once; the step must not count that as a paraphrase
        return json.dumps({"paraphrases": [question, f"In short: {question}", f"Tell me: {question}"]})
    if "at most three sentences" in prompt:
        return json.dumps({"answer": "Short version."})
    if prompt.startswith("You are") and "Expand this answer" in prompt:
        return json.dumps({"answer": "Long version with an analogy.\n\n- point one\n- point two"})
    if prompt.startswith("Translate this text into French"):
        return json.dumps({"text": "FR " + prompt.split("Text: ")[1]})
    if prompt.startswith("Translate this text into English"):
        source = prompt.split("Text: ")[1].removeprefix("FR ")
        same = "talk 2" in source  # an identical round trip adds nothing and is skipped
        return json.dumps({"text": source if same else source.replace("Why does", "For what reason does")})
    return json.dumps({"error": text})


def run_augment(
    tmp_path: Path, srv: FakeOpenAI | None, aug: dict, name: str = "a", then_split: bool = False
) -> tuple[list[dict], object, list[dict]]:
    base = tmp_path / name
    base.mkdir(exist_ok=True)
    extra = {"augment": aug, "split": {"valid": 0.25, "seed": 5}}
    if srv is not None:
        extra["llm"] = {"model": "openai/fake", "api_base": srv.base_url, "reask": 0, "retries": 0}
    with Store(tmp_path / "store.duckdb") as store:  # one store: the LLM cache is shared
        table = write_table(store, curate, f"curate-{name}", curated())
        ctx, cfg = make_ctx(base, store, "augment", extra)
        rows = augment.run(ctx, {"curate": table}, cfg)
        aug_table = write_table(store, augment, f"augment-{name}", rows)
        split_rows = []
        if then_split:
            sctx, scfg = make_ctx(base, store, "split", extra)
            split_rows = split.run(sctx, {"augment": aug_table}, scfg)
    return rows, ctx, split_rows


def test_disabled_augment_is_a_pass_through_without_calls(tmp_path: Path) -> None:
    rows, ctx, _ = run_augment(tmp_path, None, {})
    assert len(rows) == 8 and {r["kind"] for r in rows} == {"original"}
    assert all(r["origin_id"] == r["id"] and r["status"] == "ok" for r in rows)
    assert "dup" not in {r["id"] for r in rows}  # dropped curate rows are not augmented
    assert "llm" not in ctx.metrics and ctx.metrics["augmented"] == 0


def test_every_augmentation_keeps_origin_and_video(tmp_path: Path) -> None:
    aug = {
        "paraphrases": 2,
        "short_answers": True,
        "long_answers": True,
        "back_translation": {"enabled": True, "pivot": "French"},
    }
    with FakeOpenAI(responder) as srv:
        rows, ctx, _ = run_augment(tmp_path, srv, aug)
        calls = srv.calls
    origins = {r["id"]: r for r in rows if r["kind"] == "original"}
    assert len(origins) == 8
    for r in rows:
        assert r["video_id"] == origins[r["origin_id"]]["video_id"]
        assert r["tags"] == ["science"]
    ok = [r for r in rows if r["status"] == "ok"]
    kinds = ctx.metrics["kinds"]
    # talk 3's 2 questions fail to paraphrase; the echoed question is never a paraphrase
    assert kinds["paraphrase"] == 6 * 2
    assert not any(r["kind"] == "paraphrase" and r["question"] == origins[r["origin_id"]]["question"] for r in ok)
    assert kinds["short"] == kinds["long"] == 8
    longs = {r["answer"] for r in ok if r["kind"] == "long"}
    assert longs == {"Long version with an analogy.\n\n- point one\n- point two"}
    assert kinds["back_translation"] == 6  # talk 2's round trips came back unchanged
    assert all(r["question"].startswith("For what reason") for r in ok if r["kind"] == "back_translation")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["reason"].startswith("paraphrase failed") for r in failed)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 2 and all("identical" in r["reason"] for r in skipped)
    assert len({r["id"] for r in rows}) == len(rows)  # ids are unique
    assert calls == 8 * 5  # paraphrase, short, long, and two translations per question
    assert ctx.metrics["llm"]["calls"] == calls

    with FakeOpenAI(responder) as again:  # same prompts: every valid reply comes from the LLM cache
        rows2, _, _ = run_augment(tmp_path, again, aug, name="b")
        assert again.calls == 2  # only the two replies that were not JSON are asked again

    def content(out: list[dict]) -> list[tuple]:
        return [(r["id"], r["question"], r["answer"]) for r in out]

    assert content(rows2) == content(rows)


def test_augmented_rows_never_leak_across_splits(tmp_path: Path) -> None:
    aug = {"paraphrases": 2, "short_answers": True, "back_translation": {"enabled": True}}
    with FakeOpenAI(responder) as srv:
        rows, _, split_rows = run_augment(tmp_path, srv, aug, then_split=True)
    side = {r["id"]: r["split"] for r in split_rows if r["kind"] == "original"}
    assert set(side.values()) == {"train", "valid"}
    augmented = [r for r in split_rows if r["kind"] != "original"]
    assert len(augmented) == sum(r["status"] == "ok" and r["kind"] != "original" for r in rows)
    assert all(r["split"] == side[r["origin_id"]] for r in augmented)
    valid_questions = {r["question"] for r in split_rows if r["split"] == "valid"}
    train_origins = {r["origin_id"] for r in split_rows if r["split"] == "train"}
    assert not any(r["origin_id"] in train_origins for r in split_rows if r["question"] in valid_questions)


def test_a_paraphrase_prompt_may_use_every_placeholder_it_declares(tmp_path: Path) -> None:
    """`{creator}` is allowed in prompts.paraphrase (validation accepts it): the step must fill it.

    Before: KeyError('creator') inside the step, after the recipe had validated.
    """
    prompt = "Rewrite this question {n} different ways, as {creator} would ask it. Question: {question}"
    extra = {"prompts": {"paraphrase": prompt}, "augment": {"paraphrases": 1}}
    with FakeOpenAI(lambda body: json.dumps({"paraphrases": ["Why, then?"]})) as srv:
        extra["llm"] = {"model": "openai/fake", "api_base": srv.base_url, "reask": 0, "retries": 0}
        with Store(tmp_path / "store.duckdb") as store:
            table = write_table(store, curate, "curate", curated(videos=1, per_video=1))
            ctx, cfg = make_ctx(tmp_path, store, "augment", extra)
            rows = augment.run(ctx, {"curate": table}, cfg)
        sent = srv.requests[0]["messages"][-1]["content"]
    assert "as Dr. Test would ask it" in sent
    assert [r["question"] for r in rows if r["kind"] == "paraphrase"] == ["Why, then?"]
