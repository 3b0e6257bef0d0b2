"""Evaluation: pure scores, and the evaluate step on two tiny real models (base vs "tuned")."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from engine.data import scores as s

LOOP = "Fasting is good for you. " * 30


# -- pure scores ------------------------------------------------------------------------------


def test_format_features_and_shares() -> None:
    rich = "First point here.\n\nSecond **key** paragraph.\n\n- one\n- two\n"
    assert s.format_features(rich) == {"paragraphs": True, "bold": True, "lists": True}
    assert s.format_features("Just one line with a * star.") == {"paragraphs": False, "bold": False, "lists": False}
    assert s.format_features("1. step\n2) step")["lists"] is True
    assert s.format_shares([rich, "plain"]) == {"paragraphs": 0.5, "bold": 0.5, "lists": 0.5}
    assert s.format_shares([]) == {"paragraphs": 0.0, "bold": 0.0, "lists": 0.0}


def test_format_compliance_gap_against_training_shares() -> None:
    result = s.format_compliance(["a\n\nb", "c\n\nd"], {"paragraphs": 1.0, "bold": 0.6, "lists": 0.0})
    assert result["shares"]["paragraphs"] == 1.0
    assert result["gap"] == pytest.approx(0.6 / 3)


def test_length_stats_ratio_to_references() -> None:
    out = s.length_stats(["one two", "one two three four"], ["a b c", "a b c d e", "a b c"])
    assert out["median_words"] == 3 and out["reference_median_words"] == 3 and out["ratio"] == 1.0
    assert s.length_stats([], [])["ratio"] is None
    assert s.word_count("It's a well-known fact.") == 5


def test_repetition_detects_sentence_and_ngram_loops() -> None:
    assert s.repetition(LOOP)["loop"] and s.repetition(LOOP)["max_sentence_repeats"] == 30
    no_punct = "and then the body burns fat " * 10
    assert s.repetition(no_punct)["loop"] and s.repetition(no_punct)["max_ngram_repeats"] >= 5
    fine = "Insulin stores energy. Fasting lowers insulin. Then the body burns fat. Sleep matters too."
    assert not s.repetition(fine)["loop"]
    assert s.loop_rate([LOOP, fine]) == 0.5 and s.loop_rate([]) == 0.0


def test_banned_phrase_rate_is_case_insensitive() -> None:
    assert s.banned_hits("As Mentioned IN THIS VIDEO", ["in this video", "the speaker"]) == ["in this video"]
    assert s.banned_rate(["In the video he says", "clean answer"], ["in the video"]) == 0.5
    assert s.banned_hits("as shown in this\n  video", ["in this video"]) == ["in this video"]  # as curate matches


def test_probes() -> None:
    from engine.data.eval_set import DEFAULT_PROBES

    greeting, arithmetic, capital = DEFAULT_PROBES
    assert s.probe_passes(greeting, "Hi! How can I help?")
    assert s.probe_passes(greeting, "I'm Dr. Test. What can I do for you today?")
    assert not s.probe_passes(greeting, "Insulin is a hormone that stores energy.")
    assert s.probe_passes(arithmetic, "12") and not s.probe_passes(arithmetic, "13")
    assert not s.probe_passes(arithmetic, "120") and s.probe_passes(arithmetic, "Twelve.")  # whole words
    assert not s.probe_passes(greeting, "This is what insulin does.")  # "hi" inside "this" is no greeting
    assert s.probe_passes(capital, "Paris, of course.") and not s.probe_passes(capital, "")
    assert not s.probe_passes(capital, "Paris. " * 20)  # a loop is not a pass


def test_judge_both_orders_cancel_position_bias() -> None:
    # first: A=tuned, B=base; second: A=base, B=tuned
    assert s.judge_verdict("A", "B") == "tuned"
    assert s.judge_verdict("B", "A") == "base"
    assert s.judge_verdict("A", "A") == "tie"  # always picks the first slot: position bias
    assert s.judge_verdict("tie", "B") == "tie" and s.judge_verdict(None, "B") == "tie"
    assert s.judge_summary(["tuned", "tuned", "base", "tie"]) == {
        "n": 4,
        "tuned_wins": 2,
        "base_wins": 1,
        "ties": 1,
        "tuned_win_rate": 0.5,
    }


def test_json_safe_replaces_non_finite_floats() -> None:
    assert s.json_safe({"a": [float("nan"), 1.5], "b": float("inf"), "c": "x"}) == {
        "a": [None, 1.5],
        "b": None,
        "c": "x",
    }


def test_model_scores_bundle() -> None:
    out = s.model_scores([LOOP, "In this video: **x**"], ["a b c"], {"bold": 1.0}, ["in this video"])
    assert out["loop_rate"] == 0.5 and out["banned_rate"] == 0.5
    assert out["format"]["shares"]["bold"] == 0.5 and out["length"]["reference_median_words"] == 3


# -- the step on tiny models -----------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You are Dr. Test. Answer in your own voice."}
QA = [
    ("What is fasting?", "Fasting is **not eating** for a while.\n\nIt lowers insulin."),
    ("Why do I get hungry?", "Hunger comes in waves.\n\n- drink water\n- drink tea"),
    ("Is it bad to skip breakfast?", "No. Breakfast is not the most important meal."),
    ("What is insulin?", "Insulin is a hormone that tells the body to store energy."),
]


def write_split(folder: Path) -> list[dict]:
    data = folder / "data"
    data.mkdir(parents=True)
    rows = []
    for i, (q, a) in enumerate(QA):
        split = "train" if i < 2 else "test" if i == 2 else "valid"
        rows.append({"id": f"r{i}", "split": split, "question": q, "answer": a, "status": "ok", "reason": None})
        with open(data / f"{split}.jsonl", "a", encoding="utf-8") as f:
            f.write(
                json.dumps({"messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                + "\n"
            )
    return rows


def judge_responder(body: dict) -> str:
    """Prefers the longer answer: consistent in both orders, so verdicts are real wins."""
    text = body["messages"][-1]["content"]
    a, b = re.search(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\Z", text, re.S).groups()
    return json.dumps({"winner": "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"})


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from helpers.tiny_model import make_tiny_llama

    root = tmp_path_factory.mktemp("models")
    return make_tiny_llama(root / "base", seed=0), make_tiny_llama(root / "export" / "model", seed=1)


def test_evaluate_step_produces_every_score(
    tmp_path: Path, tiny_models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.pipeline.recipes import parse_recipe
    from engine.pipeline.store import Store
    from engine.steps import evaluate
    from engine.steps.base import RunOptions, StepContext
    from fakes.openai_server import FakeOpenAI

    base, tuned = tiny_models
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    split_rows = write_split(tmp_path / "split")
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (tmp_path / "one.txt").write_text("A transcript.", encoding="utf-8")
    with FakeOpenAI(judge_responder) as fake, Store(tmp_path / "store.duckdb") as store:
        recipe = parse_recipe(
            {
                "name": "t",
                "creator": {"name": "Dr. Test"},
                "sources": [{"type": "local", "path": "."}],
                "llm": {"model": "openai/fake", "api_base": fake.base_url, "retries": 0},
                "train": {"model": str(base), "iters": 1},
                "eval": {
                    "questions": ["Why fast?"],
                    "heldout": 1,
                    "max_tokens": 12,
                    "judge": True,
                    "plain_greedy": True,
                },
            },
            tmp_path,
        )
        split_table = store.write_step(
            "split",
            "k" * 64,
            {
                "id": "VARCHAR",
                "split": "VARCHAR",
                "question": "VARCHAR",
                "answer": "VARCHAR",
                "status": "VARCHAR",
                "reason": "VARCHAR",
            },
            split_rows,
            {},
        )
        ctx = StepContext(
            base_dir=recipe.base_dir,
            step="evaluate",
            key="e" * 64,
            store=store,
            work_dir=tmp_path / "work",
            run_dir=run_dir,
            models_dir=tmp_path / "models",
            options=RunOptions(quiet=True),
            log=logging.getLogger("test"),
            upstream_dirs={"split": tmp_path / "split", "export": tuned.parent, "train": tmp_path / "train"},
        )
        ctx.work_dir.mkdir()
        rows = evaluate.run(ctx, {"split": split_table}, evaluate.config(recipe))
        judge_calls = fake.calls

    # 1 eval question + 1 held-out (test split) in 3 settings; 3 probes in the main setting only
    assert len(rows) == 2 * 3 + 3 and {r["status"] for r in rows} == {"ok"}
    assert {r["setting"] for r in rows} == {"greedy+rep1.1", "greedy", "sampled-t0.7+rep1.1"}
    heldout = next(r for r in rows if r["source"] == "heldout")
    assert heldout["question"] == "Is it bad to skip breakfast?" and heldout["reference"].startswith("No.")
    assert all(r["base"] != r["tuned"] for r in rows if r["setting"] == "greedy+rep1.1")  # two different models
    doc = json.loads((ctx.work_dir / "eval.json").read_text())
    summary = doc["summary"]
    for role in ("base", "tuned"):
        for key in (
            "loss",
            "perplexity",
            "format_gap",
            "length_ratio",
            "loop_rate",
            "banned_rate",
            "probes_passed",
            "format_gap_sampled",
            "loop_rate_sampled",
            "format_gap_plain",
            "length_ratio_plain",
        ):
            assert f"{role}_{key}" in summary, f"{role}_{key}"
        assert summary[f"{role}_perplexity"] == pytest.approx(2.718281828 ** summary[f"{role}_loss"], rel=1e-6)
    assert summary["base_loss"] != summary["tuned_loss"]
    assert doc["loss"]["base"]["tokens"] == doc["loss"]["tuned"]["tokens"] > 0  # the same tokens for both
    assert doc["train_format_shares"] == {"paragraphs": 1.0, "bold": 0.5, "lists": 0.5}
    assert summary["probes_total"] == 3
    assert judge_calls == 4  # 2 answered items x both orders
    judge = doc["judge"]
    assert judge["n"] == 2 and judge["failed"] == 0
    assert judge["tuned_wins"] + judge["base_wins"] + judge["ties"] == 2
    assert ctx.metrics["judge_tuned_win_rate"] == judge["tuned_win_rate"]
    assert ctx.metrics["llm"]["calls"] == 4 and ctx.metrics["llm"]["failures"] == 0
    assert ctx.metrics["tuned_loss"] == summary["tuned_loss"]
    # The step writes only its own outputs: report.html is the runner's, once the run is complete
    # (so the run folder needs no manifest here, and none was written).
    assert sorted(p.name for p in ctx.work_dir.iterdir()) == ["eval.json"]


# -- recipe ask ---------------------------------------------------------------------------------


def make_adapters(base: Path, out: Path) -> Path:
    """A real (random) LoRA adapter for the tiny model, in mlx-lm's on-disk format."""
    from engine.models.blas import import_mlx

    mx = import_mlx()
    import mlx_lm
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(str(base))
    model.freeze()
    params = {"rank": 4, "scale": 20.0, "dropout": 0.0, "keys": ["self_attn.q_proj", "self_attn.v_proj"]}
    linear_to_lora_layers(model, 2, params)
    mx.random.seed(3)
    updates = [
        (k, mx.random.normal(v.shape) * 0.5)
        for k, v in tree_flatten(model.trainable_parameters())
        if k.endswith("lora_b")
    ]
    from mlx.utils import tree_unflatten

    model.update(tree_unflatten(updates))
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    (out / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": params}), encoding="utf-8"
    )
    return out


def test_ask_streams_from_fused_or_adapters(tmp_path: Path, tiny_models: tuple[Path, Path]) -> None:
    import shutil

    from click.testing import CliRunner

    from engine.cli import main
    from engine.inspect.ask import ask, find_tuned_model, system_prompt

    base, tuned = tiny_models
    run = tmp_path / "runs" / "abc123"
    shutil.copytree(tuned, run / "model")
    make_adapters(base, run / "adapters")
    (run / "resolved.json").write_text(
        json.dumps(
            {
                "creator": {"name": "Dr. T"},
                "train": {"model": str(base)},
                "split": {"system_prompt": "You are {creator}."},
                "eval": {"max_tokens": 8, "repetition_penalty": 1.1},
            }
        )
    )
    (run / "manifest.json").write_text(json.dumps({"run_id": "abc123", "recipe_path": str(tmp_path / "r.yaml")}))
    assert system_prompt(run) == "You are Dr. T."
    assert find_tuned_model(run).kind == "fused" and find_tuned_model(run, "adapters").kind == "adapters"
    fused = list(ask(run, "What is fasting?", tmp_path / "models"))
    adapted = list(ask(run, "What is fasting?", tmp_path / "models", prefer="adapters"))
    from engine.models.generate import chat_generate
    from engine.models.resolve import load_model

    model, tokenizer = load_model(str(run / "model"), tmp_path / "models")
    batch = chat_generate(
        model,
        tokenizer,
        [[{"role": "system", "content": "You are Dr. T."}, {"role": "user", "content": "What is fasting?"}]],
        8,
        repetition_penalty=1.1,
    )
    assert "".join(fused).strip() == batch[0] and batch[0]  # streaming gives the evaluation's greedy answer
    assert "".join(adapted) != "".join(fused)
    result = CliRunner().invoke(
        main, ["ask", "abc", "What is fasting?", "--runs-dir", str(run.parent), "--max-tokens", "8"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "".join(fused).strip()
    shutil.rmtree(run / "model")
    shutil.rmtree(run / "adapters")
    missing = CliRunner().invoke(main, ["ask", str(run), "hi"])
    assert missing.exit_code == 1 and "no tuned model" in missing.output


def test_evaluate_uses_base_plus_adapters_without_a_fused_model(tmp_path: Path, tiny_models: tuple[Path, Path]) -> None:
    from engine.pipeline.recipes import parse_recipe
    from engine.pipeline.store import Store
    from engine.steps import evaluate
    from engine.steps.base import RunOptions, StepContext

    base, _ = tiny_models
    write_split(tmp_path / "split")
    make_adapters(base, tmp_path / "train" / "adapters")
    (tmp_path / "export").mkdir()
    (tmp_path / "one.txt").write_text("A transcript.", encoding="utf-8")
    recipe = parse_recipe(
        {
            "name": "t",
            "creator": {"name": "Dr. Test"},
            "sources": [{"type": "local", "path": "."}],
            "train": {"model": str(base), "iters": 1},
            "eval": {
                "questions": ["Why fast?"],
                "heldout": 0,
                "max_tokens": 6,
                "sampled": False,
                "probes": False,
                "plain_greedy": True,
            },
        },
        tmp_path,
    )
    with Store(tmp_path / "store.duckdb") as store:
        ctx = StepContext(
            base_dir=recipe.base_dir,
            step="evaluate",
            key="e" * 64,
            store=store,
            work_dir=tmp_path / "work",
            run_dir=tmp_path / "no-run",
            models_dir=tmp_path / "models",
            options=RunOptions(quiet=True),
            upstream_dirs={d: tmp_path / d for d in ("split", "train", "export")},
        )
        ctx.work_dir.mkdir()
        rows = evaluate.run(ctx, {}, evaluate.config(recipe))
    assert [(r["source"], r["setting"]) for r in rows] == [("eval", "greedy+rep1.1"), ("eval", "greedy")]
    summary = ctx.metrics
    assert summary["base_loss"] != summary["tuned_loss"]  # the adapters changed the model
    assert "report_error" not in summary and not (ctx.work_dir / "report.html").exists()
    assert json.loads((ctx.work_dir / "eval.json").read_text())["summary"]["questions"] == 1


# -- prompt objects, files and probes from the recipe -----------------------------------------


def test_evaluate_asks_each_prompt_with_its_own_max_tokens_and_records_checks(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    """Every prompt's limit reaches generation (each answer equals a direct generation at that
    limit), expected fills the reference, and probes pass or fail on their words in eval.json
    and report.html."""
    from engine.inspect.report import write_report
    from engine.models.generate import chat_generate
    from engine.models.resolve import load_model
    from engine.pipeline.recipes import parse_recipe
    from engine.pipeline.store import Store
    from engine.steps import evaluate
    from engine.steps.base import RunOptions, StepContext
    from helpers.run_folders import make_run

    base, tuned = tiny_models
    write_split(tmp_path / "split")
    (tmp_path / "one.txt").write_text("A transcript.", encoding="utf-8")

    loaded: dict[Path, tuple] = {}

    def direct(model_dir: Path, prompt: str, max_tokens: int) -> str:
        if model_dir not in loaded:
            loaded[model_dir] = load_model(str(model_dir), tmp_path / "models")
        model, tokenizer = loaded[model_dir]
        messages = [SYSTEM, {"role": "user", "content": prompt}]
        return chat_generate(model, tokenizer, [messages], max_tokens, repetition_penalty=1.1)[0]

    # A word the base model's own answer holds (the tiny model answers "22222..."), so it passes.
    word = re.findall(r"\w+", direct(base, "What is fasting?", 9))[0]
    (tmp_path / "set.jsonl").write_text(
        '"Why do I get hungry?"\n'
        + json.dumps({"prompt": "What is fasting?", "kind": "probe", "max_tokens": 9, "must_include": [word.upper()]})
        + "\n",
        encoding="utf-8",
    )
    questions = [
        {"prompt": "Why fast?", "expected": "Because insulin falls.", "max_tokens": 3},
        {"prompt": "What is insulin?", "kind": "probe", "max_tokens": 5, "must_include": ["zebra"]},
    ]
    recipe = parse_recipe(
        {
            "name": "t",
            "creator": {"name": "Dr. Test"},
            "sources": [{"type": "local", "path": "."}],
            "train": {"model": str(base), "iters": 1},
            "eval": {
                "questions": questions,
                "questions_file": "set.jsonl",
                "heldout": 0,
                "max_tokens": 7,
                "sampled": False,
            },
        },
        tmp_path,
    )
    with Store(tmp_path / "store.duckdb") as store:
        ctx = StepContext(
            base_dir=recipe.base_dir,
            step="evaluate",
            key="e" * 64,
            store=store,
            work_dir=tmp_path / "work",
            run_dir=tmp_path / "no-run",
            models_dir=tmp_path / "models",
            options=RunOptions(quiet=True),
            upstream_dirs={"split": tmp_path / "split", "export": tuned.parent, "train": tmp_path / "train"},
        )
        ctx.work_dir.mkdir()
        evaluate.run(ctx, {}, evaluate.config(recipe))

    doc = json.loads((ctx.work_dir / "eval.json").read_text())
    items = {it["question"]: it for it in doc["items"]}
    assert list(items) == ["Why fast?", "Why do I get hungry?", "What is insulin?", "What is fasting?"]  # no defaults
    expected_limits = {"Why fast?": 3, "Why do I get hungry?": 7, "What is insulin?": 5, "What is fasting?": 9}
    for question, limit in expected_limits.items():
        it = items[question]
        assert it["max_tokens"] == limit
        assert it["answers"]["greedy+rep1.1"]["base"] == direct(base, question, limit), question
        assert it["answers"]["greedy+rep1.1"]["tuned"] == direct(tuned, question, limit), question
    assert items["Why fast?"]["kind"] == "voice" and items["Why fast?"]["expected"] == "Because insulin falls."
    assert items["Why fast?"]["reference"] == "Because insulin falls." and items["Why fast?"]["passed"] is None
    assert items["Why do I get hungry?"]["expected"] is None
    zebra, own_word = items["What is insulin?"], items["What is fasting?"]
    assert zebra["kind"] == "probe" and zebra["passed"] == {"base": False, "tuned": False}
    assert zebra["missing"]["tuned"] == ["zebra"] and zebra["must_include"] == ["zebra"]
    assert own_word["passed"]["base"] is True
    assert doc["probes"]["base"]["passed"] == 1 and doc["probes"]["base"]["total"] == 2
    assert doc["summary"]["probes_total"] == 2 and doc["summary"]["questions"] == 2
    assert "questions_file" not in doc["settings"]["eval"]  # not keyed, so not in a cached output

    run = make_run(tmp_path, "r1")
    shutil.copy(ctx.work_dir / "eval.json", run / "eval.json")
    page = write_report(run).read_text(encoding="utf-8")
    answers = page[page.index("<h2>Answers</h2>") :]
    assert "Because insulin falls." in answers
    assert "base fail (missing: zebra)" in answers and "tuned fail (missing: zebra)" in answers
    assert '<span class="better">base pass</span>' in answers


# -- sampling settings named by what they are -------------------------------------------------


def test_settings_are_named_by_their_parameters_and_record_every_one(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    """The setting once called "greedy" used a repetition penalty: plain greedy answers differ. Each
    setting's answers equal a direct generation with exactly the parameters its name and record say."""
    from engine.models.generate import chat_generate
    from engine.models.resolve import load_model
    from engine.pipeline.recipes import parse_recipe
    from engine.pipeline.store import Store
    from engine.steps import evaluate
    from engine.steps.base import RunOptions, StepContext

    base, tuned = tiny_models
    write_split(tmp_path / "split")
    (tmp_path / "one.txt").write_text("A transcript.", encoding="utf-8")
    eval_yaml = {
        "questions": ["What is fasting?", "Why do I get hungry?"],
        "heldout": 0,
        "max_tokens": 24,
        "temperature": 0.9,
        "seed": 5,
        "repetition_penalty": 40.0,
        "plain_greedy": True,
        "repetition_context_size": 6,
        "probes": False,
    }

    def evaluated(name: str, **changes: object) -> tuple[dict, dict]:
        recipe = parse_recipe(
            {
                "name": "t",
                "creator": {"name": "Dr. Test"},
                "sources": [{"type": "local", "path": "."}],
                "train": {"model": str(base), "iters": 1},
                "eval": {**eval_yaml, **changes},
            },
            tmp_path,
        )
        with Store(tmp_path / f"{name}.duckdb") as store:
            ctx = StepContext(
                base_dir=recipe.base_dir,
                step="evaluate",
                key="e" * 64,
                store=store,
                work_dir=tmp_path / name,
                run_dir=tmp_path / "no-run",
                models_dir=tmp_path / "models",
                options=RunOptions(quiet=True),
                upstream_dirs={"split": tmp_path / "split", "export": tuned.parent, "train": tmp_path / "train"},
            )
            ctx.work_dir.mkdir()
            evaluate.run(ctx, {}, evaluate.config(recipe))
        return json.loads((ctx.work_dir / "eval.json").read_text()), ctx.metrics

    doc, metrics = evaluated("penalised")
    assert list(doc["sampling"]) == ["greedy+rep40", "greedy", "sampled-t0.9+rep40"]
    main, plain, sampled = doc["sampling"].values()
    assert main == {
        "label": "greedy+rep40",
        "summary_suffix": "",
        "decoding": "greedy",
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "repetition_penalty": 40.0,
        "repetition_context_size": 6,
        "seed": 5,
        "seed_per_batch": "seed + batch index (up to 16 answers a batch, every setting's together)",
        "max_tokens": 24,
        "asked": "voice and probe prompts",
    }
    assert plain["repetition_penalty"] == 1.0 and plain["repetition_context_size"] is None
    assert plain["summary_suffix"] == "_plain" and plain["temperature"] == 0.0
    assert sampled["temperature"] == 0.9 and sampled["repetition_penalty"] == 40.0 and sampled["seed"] == 5
    assert metrics["sampling"] == doc["sampling"]  # metrics.json records them too
    summary = doc["summary"]
    assert (summary["setting"], summary["setting_plain"], summary["setting_sampled"]) == tuple(doc["sampling"])

    model, tokenizer = load_model(str(tuned), tmp_path / "models")
    convs = [[SYSTEM, {"role": "user", "content": q}] for q in eval_yaml["questions"]]  # type: ignore[union-attr]
    penalised = chat_generate(model, tokenizer, convs, 24, repetition_penalty=40.0, repetition_context_size=6)
    greedy = chat_generate(model, tokenizer, convs, 24)
    answers = [it["answers"] for it in doc["items"]]
    assert [a["greedy+rep40"]["tuned"] for a in answers] == penalised
    assert [a["greedy"]["tuned"] for a in answers] == greedy
    assert penalised != greedy  # the penalty changes the text: one name for both hid that

    plain_only, _ = evaluated("no-penalty", repetition_penalty=1.0, sampled=False)
    assert list(plain_only["sampling"]) == ["greedy"]  # nothing to tell apart: no duplicate setting
    assert [it["answers"]["greedy"]["tuned"] for it in plain_only["items"]] == greedy
