"""curate on crafted `answers` tables in a real DuckDB store: dedup, every filter's reason, stats."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from engine.data.dedup import TokenSetBound, candidate_pairs, find_duplicates, normalise
from engine.pipeline.hashing import digest
from engine.pipeline.recipes import parse_recipe
from engine.pipeline.store import Store
from engine.steps import answers as answers_step
from engine.steps import curate, load_step
from engine.steps.base import RunOptions, StepContext

GOOD = (
    "Your body keeps a **clock** for hunger.\n\nGhrelin rises before meals you usually eat, "
    "so the stomach learns your schedule and asks for food on time. That is why it feels so regular."
)


def answer_row(
    video: str,
    question: str,
    answer: str = GOOD,
    tags: tuple = ("hunger",),
    status: str = "ok",
    reason: str | None = None,
) -> dict:
    return {
        "id": digest([video, question])[:16],
        "video_id": video,
        "title": f"Talk {video}",
        "question": question,
        "answer": answer,
        "tags": list(tags),
        "model": "fake",
        "prompt_digest": "p",
        "status": status,
        "reason": reason,
    }


def make_ctx(tmp_path: Path, store: Store, step: str, recipe_extra: dict | None = None) -> tuple[StepContext, Any]:
    """A step's context and its keyed config, from a minimal recipe plus `recipe_extra`."""
    data = {
        "name": "t",
        "creator": {"name": "Dr. Test"},
        "sources": [{"type": "local", "path": "x"}],
        **(recipe_extra or {}),
    }
    (tmp_path / "x").mkdir(exist_ok=True)
    (tmp_path / "x" / "talk.txt").write_text("A talk.", encoding="utf-8")
    recipe = parse_recipe(data, tmp_path)
    work = tmp_path / f"work-{step}"
    work.mkdir(exist_ok=True)
    ctx = StepContext(
        step=step,
        key=f"{step}-key",
        store=store,
        work_dir=work,
        base_dir=recipe.base_dir,
        run_dir=tmp_path,
        models_dir=tmp_path / "models",
        options=RunOptions(quiet=True),
        log=logging.getLogger("test"),
    )
    return ctx, load_step(step).config(recipe)


def write_table(store: Store, module, key: str, rows: list[dict]):  # noqa: ANN001, ANN201
    return store.write_step(module.NAME, key, module.COLUMNS, rows, {"config": {}})


def run_curate(tmp_path: Path, rows: list[dict], extra: dict | None = None) -> tuple[list[dict], StepContext]:
    with Store(tmp_path / "store.duckdb") as store:
        table = write_table(store, answers_step, "answers-key", rows)
        ctx, cfg = make_ctx(tmp_path, store, "curate", extra)
        out = curate.run(ctx, {"answers": table}, cfg)
        write_table(store, curate, "curate-key", out)  # the rows fit the declared columns
    return out, ctx


def by_question(rows: list[dict]) -> dict[str, dict]:
    return {r["question"]: r for r in rows}


def test_normalise_folds_case_accents_and_punctuation() -> None:
    assert normalise("  Why does CAFÉ-coffee   keep me awake?! ") == "why does cafe coffee keep me awake"


def test_find_duplicates_groups_chains_and_keeps_best() -> None:
    qs = [
        "Why do I get hungry at the same time every day?",
        "Why do I get hungry at the same time each day?",
        "why do i get HUNGRY at the same time every day",
        "What does insulin do after a meal?",
        "How does caffeine affect deep sleep?",
    ]
    dups = find_duplicates(qs, [10, 90, 50, 10, 10], block=2)  # tiny blocks cross block edges
    assert {d.index for d in dups} == {0, 2}
    assert {d.kept for d in dups} == {1}
    assert all(d.similarity >= 85 for d in dups)


def test_chains_do_not_collapse_distinct_questions() -> None:
    # a~b (90) and b~c (88) but a and c differ (78): a group of three, linked through b
    a, b, c = "the quick brown fox jumps high", "the quick brown fox leaps high", "the quick brown fox leaps low"
    hub_best = find_duplicates([a, b, c], [1, 9, 1], scorer="ratio", threshold=85)
    assert [(d.index, d.kept) for d in hub_best] == [(0, 1), (2, 1)]
    end_best = find_duplicates([a, b, c], [9, 5, 1], scorer="ratio", threshold=85)
    assert [(d.index, d.kept, d.similarity, d.group) for d in end_best] == [(1, 0, 90.0, 0)]  # c stays


@pytest.mark.parametrize("threshold", [60, 85, 92.5])
def test_token_set_prefilter_finds_exactly_the_cdist_pairs(threshold: float) -> None:
    import random

    rng = random.Random(int(threshold))
    vocab = [
        "a",
        "ab",
        "abc",
        "sleep",
        "sleeps",
        "slept",
        "insulin",
        "insulins",
        "fat",
        "fats",
        "coffee",
        "cofee",
        "why",
        "how",
        "does",
        "do",
        "the",
        "a",
        "night",
        "nights",
        "é",
    ]
    texts = []
    for _ in range(400):  # short, overlapping token sets: subsets, typos, repeats and empties
        if texts and rng.random() < 0.3:
            base = rng.choice(texts).split()
            texts.append(" ".join(base[:-1] + [rng.choice(vocab)] * rng.randint(0, 2)))
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 7))))
    plain = candidate_pairs(texts, threshold=threshold, block=64, prefilter=False)
    bounded = candidate_pairs(texts, threshold=threshold, block=64, prefilter=True)
    assert len(plain) > 100 and sorted(bounded) == sorted(plain)


def test_token_sort_shortcut_matches_rapidfuzz() -> None:
    texts = ["b a c", "a b c", "c b a d", "sleep well tonight", "tonight sleep well", "well slept", "x"] * 3
    fast = candidate_pairs(texts, scorer="token_sort_ratio", threshold=80)
    assert fast and fast == candidate_pairs(texts, scorer="token_sort_ratio", threshold=80, prefilter=False)


def test_big_alphabets_fall_back_to_plain_cdist(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    monkeypatch.setattr(TokenSetBound, "MAX_WIDTH", 60)  # 40 two-letter words: up to 80 letters
    rng = random.Random(0)
    words = ["".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(2)) for _ in range(40)]
    texts = [" ".join(rng.sample(words, 4)) for _ in range(200)]
    with pytest.raises(OverflowError):
        TokenSetBound(texts)
    pairs = candidate_pairs(texts, threshold=50, block=32)
    assert pairs and pairs == candidate_pairs(texts, threshold=50, block=32, prefilter=False)


def test_find_duplicates_threshold_is_exact_for_fractions() -> None:
    qs = ["how does sleep affect appetite", "how does sleep affect your appetite"]
    from rapidfuzz import fuzz

    sim = fuzz.ratio(normalise(qs[0]), normalise(qs[1]))
    assert find_duplicates(qs, [0, 0], scorer="ratio", threshold=sim - 0.01)
    assert not find_duplicates(qs, [0, 0], scorer="ratio", threshold=sim + 0.01)


def test_curate_drops_duplicates_across_videos_and_keeps_the_better_row(tmp_path: Path) -> None:
    rich = GOOD + "\n\n- eat at regular times\n- sleep enough"
    rows = [
        answer_row("v1", "Why do I get hungry at the same time every day?", GOOD),
        answer_row("v2", "Why do I get hungry at the same time each day?", rich),
        answer_row("v3", "What does insulin do after a big meal?", GOOD),
        answer_row("v3", "broken upstream", "", status="failed", reason="no answer"),
    ]
    out, ctx = run_curate(tmp_path, rows)
    got = by_question(out)
    assert "broken upstream" not in got  # upstream failures stay in the answers table
    loser = got["Why do I get hungry at the same time every day?"]
    winner = got["Why do I get hungry at the same time each day?"]
    assert winner["status"] == "ok" and winner["quality"] > loser["quality"]
    assert (loser["status"], loser["reason"], loser["duplicate_of"]) == ("dropped", "duplicate", winner["id"])
    assert loser["similarity"] >= 85
    assert got["What does insulin do after a big meal?"]["status"] == "ok"
    assert ctx.metrics["stages"] == {"answers": 4, "answers_ok": 3, "after_filters": 3, "after_dedup": 2, "kept": 2}
    assert ctx.metrics["dedup"]["duplicates"] == 1 and ctx.metrics["reasons"] == {"duplicate": 1}


def test_each_filter_records_its_own_reason(tmp_path: Path) -> None:
    german = (
        "Der Körper hat eine innere Uhr, und die Hormone steigen vor dem Essen, so dass man "
        "zur gleichen Zeit Hunger hat und das ist auch gut so für den Stoffwechsel."
    )
    rows = [
        answer_row("v1", "Short one?", "Too short."),
        answer_row("v1", "Long one?", "the word " * 40),
        answer_row("v2", "Banned one?", GOOD + " As mentioned in the transcript, eat."),
        answer_row("v2", "Empty one?", "   "),
        answer_row("v3", "German one?", german),
        answer_row("v3", "Plain one?", GOOD.replace("**", "")),
        answer_row("v4", "Good one?", GOOD),
    ]
    extra = {
        "filters": {
            "answer_length": {"min": 40, "max": 300},
            "formatting": {"require": ["bold"], "mode": "row"},
            "banned_phrases": ["the transcript"],
        }
    }
    out, ctx = run_curate(tmp_path, rows, extra)
    reasons = {q: r["reason"] for q, r in by_question(out).items()}
    assert reasons["Short one?"] == "too short (10 < 40 chars)"
    assert reasons["Long one?"] == "too long (360 > 300 chars)"
    assert reasons["Banned one?"] == "banned phrase: the transcript"
    assert reasons["Empty one?"] == "empty answer"
    assert reasons["German one?"].startswith("wrong language (looks like de, not en: P(en) ")
    assert reasons["Plain one?"] == "missing formatting: bold"
    assert reasons["Good one?"] is None
    assert all(r["status"] == "dropped" for r in out if r["question"] != "Good one?")
    assert ctx.metrics["kept"] == 1 and ctx.metrics["dropped"] == 6
    assert set(ctx.metrics["reasons"]) == {
        "too short",
        "too long",
        "banned phrase",
        "empty answer",
        "wrong language",
        "missing formatting",
    }


def test_word_bounds_and_formatting_share_mode(tmp_path: Path) -> None:
    plain = "A plain answer without any markup at all but long enough to pass the length bound here."
    questions = [
        "Does coffee ruin sleep?",
        "Why is blue light bad at night?",
        "Are naps healthy?",
        "What does alcohol do to dreams?",
        "Is fasting safe for children?",
        "How much protein do muscles need?",
        "Can stress raise blood sugar?",
        "Why do knees ache in cold weather?",
    ]
    rows = [answer_row(f"v{i}", q, GOOD if i < 4 else plain + " " * i) for i, q in enumerate(questions)]
    extra = {
        "filters": {
            "answer_length": {"unit": "words", "min": 5, "max": None},
            "formatting": {"require": ["bold"], "mode": "share", "min_share": 0.6},
        }
    }
    out, ctx = run_curate(tmp_path, rows, extra)
    kept = [r for r in out if r["status"] == "ok"]
    # 4 bold answers need at most 2 plain ones beside them for a 60% share: 2 plain rows go
    assert len(kept) == 6 and sum("**" in r["answer"] for r in kept) == 4
    assert ctx.metrics["reasons"] == {"formatting share": 2}
    assert ctx.metrics["formatting"]["bold"] >= 0.6


def test_llm_score_keep_top_ranks_duplicates_and_records_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes.openai_server import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    scores = {
        "Why is sleep important for memory?": 95,
        "Why is sleep so important for memory?": 40,
        "What is ghrelin?": 70,
        "What is leptin?": 20,
        "What is insulin?": 55,
    }

    def responder(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        question = prompt.split("Question: ")[1].split("\n")[0]
        return "not json at all" if question not in scores else json.dumps({"score": scores[question]})

    rows = [answer_row(f"v{i}", q) for i, q in enumerate(list(scores) + ["What breaks the scorer?"])]
    with FakeOpenAI(responder) as srv:
        extra = {
            "llm": {"model": "openai/fake", "api_base": srv.base_url, "reask": 0, "retries": 0},
            "filters": {"llm_score": {"enabled": True, "keep_top": 75}},
        }
        out, ctx = run_curate(tmp_path, rows, extra)
    got = by_question(out)
    assert got["Why is sleep so important for memory?"]["reason"] == "duplicate"  # lower score loses
    assert got["What breaks the scorer?"]["status"] == "failed"
    assert got["What breaks the scorer?"]["reason"].startswith("score failed")
    # 4 scored survivors of dedup, keep the top 75% = 3
    assert got["What is leptin?"]["reason"].startswith("below keep_top (20 < 55")
    assert {q for q, r in got.items() if r["status"] == "ok"} == {
        "Why is sleep important for memory?",
        "What is ghrelin?",
        "What is insulin?",
    }
    assert ctx.metrics["llm"]["calls"] >= 6


def test_curate_writes_stats_and_histogram(tmp_path: Path) -> None:
    questions = [
        "How does the heart pump?",
        "Why do lungs need air?",
        "What protects skin?",
        "Are bones alive?",
        "Where is blood made?",
    ]
    rows = [answer_row(f"v{i % 3}", q, GOOD, tags=(q.split()[-2], "health")) for i, q in enumerate(questions)]
    out, ctx = run_curate(tmp_path, rows)
    m = ctx.metrics
    assert m["lengths"]["answer_chars"]["median"] == len(GOOD)
    assert m["lengths"]["question_tokens"]["max"] == 5 and m["lengths"]["question_tokens"]["min"] == 3
    assert m["formatting"] == {"paragraphs": 1.0, "bold": 1.0, "lists": 0.0}
    assert m["tags"]["health"] == 5
    assert m["coverage"]["videos_with_rows"] == 3
    png = ctx.work_dir / m["plots"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_workers_do_not_change_the_step_key(tmp_path: Path) -> None:
    from engine.pipeline.hashing import digest as key_of

    with Store(tmp_path / "store.duckdb") as store:
        one = make_ctx(tmp_path, store, "curate", {"filters": {"dedup": {"workers": 1}}})[1]
        all_cores = make_ctx(tmp_path, store, "curate", {"filters": {"dedup": {"workers": -1}}})[1]
        stricter = make_ctx(tmp_path, store, "curate", {"filters": {"dedup": {"threshold": 90}}})[1]
    assert key_of(one) == key_of(all_cores) != key_of(stricter)


def test_answers_that_repeat_the_question_are_dropped_with_the_reason(tmp_path: Path) -> None:
    question = "Why do I get hungry at the same time every day?"
    long_echo = (
        "Q: why do I get HUNGRY at the same time, every day??  A: Why do I get hungry at the same time every day"
    )
    rows = [
        answer_row("v1", question, question),  # what the demo's model wrote for 3 of 12 rows
        answer_row("v2", question, "  why DO i get hungry at the same time every day  "),
        answer_row("v3", question, long_echo),  # labels around the question, twice
        answer_row("v4", "Can you fast safely for a day?", "Can you fast safely for a day? Yes, " + GOOD),
        answer_row("v5", question, GOOD),
    ]
    out, ctx = run_curate(tmp_path, rows, {"filters": {"dedup": {"enabled": False}, "answer_length": {"min": 0}}})
    status = {r["video_id"]: (r["status"], r["reason"]) for r in out}
    assert status == {
        "v1": ("dropped", "repeats the question"),
        "v2": ("dropped", "repeats the question"),
        "v3": ("dropped", "repeats the question"),
        "v4": ("ok", None),  # it starts with the question, then answers it
        "v5": ("ok", None),
    }
    assert ctx.metrics["reasons"]["repeats the question"] == 3


@pytest.mark.parametrize(
    "question,answer,repeats",
    [
        ("What is insulin?", "what is insulin", True),
        ("What is insulin?", "Question: What is insulin? Answer:", True),
        ("What is insulin?", "Insulin?", False),  # shorter than the question: says little, repeats nothing
        ("Is fasting good or bad?", "Fasting is good.", False),  # the question's words, not the question
        ("Can you fast?", "Can you fast? Yes.", False),
        ("", "anything", False),
    ],
)
def test_repeats_question(question: str, answer: str, repeats: bool) -> None:
    from engine.data.quality import repeats_question

    assert repeats_question(question, answer) is repeats


def test_defaults_hold_on_real_shaped_rows(tmp_path: Path) -> None:
    """Issue 13's failures, through the step with the recipe's defaults: distinct questions that
    share a frame stay, an English bullet list stays, a "the video mentions" leak goes."""
    bullets = (
        "**What changes during a fast:**\n\n- **Insulin** drops steadily\n- **Glucagon** rises\n"
        "- **Growth hormone** increases, preserving lean mass\n- **Noradrenaline** climbs, keeping energy up\n"
        "- **Ketones** become the main fuel after 24-48 hours"
    )
    rows = [
        answer_row("v1", "What happens to insulin levels during fasting?", bullets),
        answer_row("v2", "What happens to testosterone levels during fasting?", GOOD),
        answer_row("v3", "Do calcium supplements raise the risk of kidney stones?", GOOD),
        answer_row("v4", "Do calcium supplements raise the risk of a heart attack or stroke?", GOOD),
        answer_row("v5", "Why doesn't counting calories work for weight loss?", GOOD),
        answer_row("v6", "Why does counting calories not work for weight loss?", GOOD + " More so with snacks."),
        answer_row("v7", "Does fasting burn muscle?", "The video mentions that " + GOOD),
    ]
    out, ctx = run_curate(tmp_path, rows)
    got = {q: (r["status"], r["reason"]) for q, r in by_question(out).items()}
    assert got["What happens to insulin levels during fasting?"] == ("ok", None)
    assert got["What happens to testosterone levels during fasting?"] == ("ok", None)
    assert got["Do calcium supplements raise the risk of kidney stones?"] == ("ok", None)
    assert got["Do calcium supplements raise the risk of a heart attack or stroke?"] == ("ok", None)
    assert got["Why doesn't counting calories work for weight loss?"] == ("dropped", "duplicate")
    assert got["Why does counting calories not work for weight loss?"] == ("ok", None)
    status, reason = got["Does fasting burn muscle?"]
    assert status == "dropped" and reason.startswith("banned phrase: re:")
    assert ctx.metrics["kept"] == 5 and ctx.metrics["dedup"]["duplicates"] == 1
