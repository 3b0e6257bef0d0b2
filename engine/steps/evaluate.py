"""evaluate: base vs tuned model on eval questions, held-out rows and general probes.

Both models answer the same conversations (chat template applied, the training data's system
prompt) in each sampling setting: greedy with the repetition penalty (what `recipe ask` and the
Modelfile use), plain greedy (the raw model, which may echo or loop), and seeded sampling. Each
setting is named by what it is (`greedy+rep1.1`, `greedy`, `sampled-t0.7+rep1.1`) and every
sampling parameter is recorded with it. Held-out loss is measured on the same tokens for both.
Writes eval.json; the step's rows are the answers side by side. report.html is not written here:
it describes the whole run, so the runner writes it once the run folder is complete.
"""

from __future__ import annotations

import gc
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from engine.data import scores as scores
from engine.data.eval_set import (
    DEFAULT_PROBES,
    EvalQuestion,
    QuestionItem,
    as_question,
    load_questions_file,
    rule_problem,
)
from engine.data.jsonl import read_jsonl
from engine.data.sampling import MAIN, PLAIN, SAMPLED, Sampling, penalised
from engine.errors import Problem, RecipeInvalid
from engine.pipeline.hashing import digest
from engine.recipe.located import Located
from engine.recipe.section import Section
from engine.recipe.shared import LLMParams
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "evaluate"
VERSION = 5  # 5: every setting decoded in shared batches; 4: settings named by their parameters, plain greedy
# train: its adapters stand in for the fused model when export.fuse is false.
DEPENDS = ("split", "train", "export")
COLUMNS = {
    "id": "VARCHAR",
    "source": "VARCHAR",
    "question": "VARCHAR",
    "setting": "VARCHAR",
    "base": "VARCHAR",
    "tuned": "VARCHAR",
    "reference": "VARCHAR",
    "base_loop": "BOOLEAN",
    "tuned_loop": "BOOLEAN",
    "verdict": "VARCHAR",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "id": "The prompt's id (eval.json items[].id).",
    "source": "eval (the recipe's prompts) | heldout (a test/valid row) | probe (a general-ability check).",
    "question": "The prompt.",
    "setting": "The sampling setting, named by what it is (greedy+rep1.1, greedy, sampled-t0.7+rep1.1); "
    "every parameter is in eval.json `sampling`.",
    "base": "The base model's answer.",
    "tuned": "The tuned model's answer.",
    "reference": "The expected answer (the recipe's `expected`, or the held-out row's); NULL when none.",
    "base_loop": "True when the base answer loops (repeated sentences or n-grams).",
    "tuned_loop": "True when the tuned answer loops.",
    "verdict": "The LLM judge's pick (tuned | base | tie | failed); NULL unless eval.judge is on (main setting only).",
}
BATCH = 16  # answers decoded together, across settings (a CPU decoding step streams the weights once)
MAX_LOSS_ROWS = 200  # held-out conversations scored for loss: enough for a stable mean, bounded time
JUDGE_SCHEMA = {"type": "object", "properties": {"winner": {"enum": ["A", "B", "tie"]}}, "required": ["winner"]}


SECTION = "eval"
LLM_PASSES = ("judge",)


class EvalSettings(Section):
    """Base vs tuned evaluation."""

    # The prompts enter the step's key through Config.questions, resolved from both fields: the
    # file's content keys the step, never where it lives (moving the set keeps the cache).
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"questions", "questions_file"})

    questions: tuple[QuestionItem, ...] = Field(
        (),
        description="Prompts both models answer: a string (a prompt in the creator's voice), or an object "
        "{prompt, expected, max_tokens, kind: voice | probe, must_include}.",
    )
    questions_file: str | None = Field(
        None,
        description="More prompts from a .json (a list) or .jsonl (one a line) file of the same items, "
        "relative to the recipe's folder; asked after `questions`.",
    )
    heldout: int = Field(5, ge=0, description="Held-out Q&A rows (test split, else valid) also answered.")
    max_tokens: int = Field(
        512, ge=1, description="Most tokens per answer (a multi-paragraph answer); a prompt's own max_tokens wins."
    )
    sampled: bool = Field(
        True, description="Also answer with seeded sampling at `temperature` (with the repetition penalty)."
    )
    temperature: float = Field(0.7, ge=0, description="Temperature of the sampled setting.")
    seed: int = Field(0, ge=0, description="Seed of the sampled setting.")
    repetition_penalty: float = Field(
        1.1,
        gt=0,
        description="Repetition penalty of the main greedy setting and the sampled one (1.0: none); "
        "`recipe ask` and the exported Modelfile use it too.",
    )
    repetition_context_size: int = Field(
        20, ge=1, description="Recent tokens the repetition penalty looks back over (mlx-lm's default)."
    )
    plain_greedy: bool = Field(
        False,
        description="Also answer plain greedy (no repetition penalty) when the penalty is not 1.0: what the "
        "model does on its own (it may echo the question or loop). Off by default: one more generation pass.",
    )
    probes: bool = Field(
        True,
        description="Ask the built-in general-ability probes (greeting, arithmetic, a capital) to catch "
        "forgetting, when the prompts include no `kind: probe` of their own.",
    )
    judge: bool = Field(False, description="Pairwise LLM judge (both orders) through `llm.passes.judge`.")


Settings = EvalSettings


@dataclass(frozen=True)
class Config:
    eval: EvalSettings
    # Every prompt asked, in order: the recipe's, its file's, then the built-in probes if it has none.
    questions: tuple[EvalQuestion, ...]
    # Not keyed as written (a path is a location): the base model's identity keys train, whose
    # key is upstream of this step's.
    base_model: str = field(compare=False)
    banned: tuple[str, ...]  # the curate step's banned phrases, scored on both models' answers
    creator: str
    # The judge's prompt and model only matter (and only key the step) when judging is on.
    judge_prompt: str | None = None
    judge_llm: LLMParams | None = None


def config(recipe: Recipe) -> Config:
    judge = recipe.eval.judge
    return Config(
        recipe.eval,
        eval_questions(recipe.eval, recipe.base_dir),
        recipe.train.model,
        recipe.filters.banned_phrases,
        recipe.creator.name,
        recipe.prompts.judge if judge else None,
        recipe.llm.for_pass("judge") if judge else None,
    )


def questions_path(ev: EvalSettings, base_dir: Path) -> Path | None:
    return None if ev.questions_file is None else base_dir / ev.questions_file


def eval_questions(ev: EvalSettings, base_dir: Path) -> tuple[EvalQuestion, ...]:
    """The recipe's prompts, its file's, and the built-in probes when it declares no probe."""
    questions = tuple(as_question(q) for q in ev.questions)
    path = questions_path(ev, base_dir)
    if path is not None:
        loaded, problems = load_questions_file(path)
        if problems:  # check() reported these at validate time; the file changed since
            raise RecipeInvalid(problems)
        questions += loaded
    if ev.probes and not any(q.kind == "probe" for q in questions):
        questions += DEFAULT_PROBES
    return questions


def check(recipe: Recipe, located: Located) -> list[Problem]:
    """Items' cross-field rules, and the prompt file: there, and every line a prompt (its problems
    at its own lines, so a 38-prompt set with one typo says which line)."""
    problems = [
        located.problem(("eval", "questions", i), message)
        for i, q in enumerate(recipe.eval.questions)
        if (message := rule_problem(as_question(q)))
    ]
    path = questions_path(recipe.eval, recipe.base_dir)
    if path is None:
        return problems
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        message = f"{path}: {what}; the path is relative to the recipe's folder"
        return problems + [located.problem(("eval", "questions_file"), message)]
    return problems + load_questions_file(path)[1]


def split_turns(messages: list[dict]) -> tuple[list[dict], str, str]:
    """A chat example -> (prompt messages up to the last answer, question, reference answer)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = messages[:last]
    question = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
    return prompt, question, messages[last]["content"]


def build_items(cfg: Config, data_dir: Path) -> tuple[list[dict], list[list[dict]], list[str]]:
    """Items to answer, held-out conversations for the loss, and the training answers."""
    train = read_jsonl(data_dir / "train.jsonl")
    heldout = read_jsonl(data_dir / "test.jsonl") or read_jsonl(data_dir / "valid.jsonl")
    heldout = [h for h in heldout if any(m["role"] == "assistant" for m in h["messages"])]
    train_answers = [
        split_turns(r["messages"])[2] for r in train if any(m["role"] == "assistant" for m in r["messages"])
    ]
    system = next((m for r in train[:1] for m in r["messages"] if m["role"] == "system"), None)
    prefix = [system] if system else []
    ev = cfg.eval
    asked = [q for q in cfg.questions if q.kind == "voice"]
    probes = [q for q in cfg.questions if q.kind == "probe"]
    items = [_item("eval", q, prefix, ev.max_tokens) for q in asked]
    for row in random.Random(ev.seed).sample(heldout, min(ev.heldout, len(heldout))):
        prompt, question, reference = split_turns(row["messages"])
        items.append(_heldout_item(question, prompt, reference, ev.max_tokens))
    items += [_item("probe", q, prefix, ev.max_tokens) for q in probes]
    for n, it in enumerate(items):  # the position keeps ids unique when a question repeats
        it["id"] = digest([it["source"], it["question"], n])[:16]
    return items, [h["messages"] for h in heldout[:MAX_LOSS_ROWS]], train_answers


def _item(source: str, q: EvalQuestion, prefix: list[dict], default_tokens: int) -> dict:
    """An item of the recipe's prompts: `expected` is its reference answer."""
    return {
        "id": "",
        "source": source,
        "kind": q.kind,
        "question": q.prompt,
        "messages": prefix + [{"role": "user", "content": q.prompt}],
        "reference": q.expected,
        "max_tokens": q.max_tokens or default_tokens,
        "probe": q if q.kind == "probe" else None,
        "answers": {},
    }


def _heldout_item(question: str, messages: list[dict], reference: str, max_tokens: int) -> dict:
    return {
        "id": "",
        "source": "heldout",
        "kind": "voice",
        "question": question,
        "messages": messages,
        "reference": reference,
        "max_tokens": max_tokens,
        "probe": None,
        "answers": {},
    }


def settings(cfg: Config) -> list[Sampling]:
    """The sampling settings asked, main one first: greedy with the repetition penalty (what
    `recipe ask` and the Modelfile use; the probes, the judge and the verdict read it), plain
    greedy when the penalty changes anything, and seeded sampling."""
    ev = cfg.eval
    rp = ev.repetition_penalty if penalised(ev.repetition_penalty) else None

    def setting(suffix: str, temperature: float, penalty: float | None) -> Sampling:
        probes = suffix == MAIN  # a probe's pass/fail is judged on the main setting only
        return Sampling(suffix, temperature, penalty, ev.repetition_context_size, ev.seed, ev.max_tokens, BATCH, probes)

    out = [setting(MAIN, 0.0, rp)]
    if ev.plain_greedy and rp is not None:
        out.append(setting(PLAIN, 0.0, None))
    if ev.sampled and ev.temperature > 0:
        out.append(setting(SAMPLED, ev.temperature, rp))
    return out


def main_label(cfg: Config) -> str:
    return settings(cfg)[0].label


def answer_all(
    ctx: Any, role: str, spec: str, items: list[dict], loss_convs: list, cfg: Config, adapters: Path | None = None
) -> dict:
    """Load one model, answer every item in every setting, score held-out loss, free the model."""
    from engine.models.generate import GenerationRequest, generate_each
    from engine.models.loss import conversation_loss
    from engine.models.resolve import load_model

    if not items and not loss_convs:
        return {"loss": None, "conversations": 0}  # nothing to ask: do not load a model for nothing
    started = time.perf_counter()
    model, tokenizer = load_model(spec, ctx.models_dir, ctx.base_dir, adapter_path=adapters)
    # Every setting's answers in shared batches: on a CPU a decoding step costs about the same
    # for 4 rows as for 16, so greedy and sampled rows (and short probes) decode together.
    # Rows with like limits share a batch (a finished row leaves its batch at once, but the batch
    # lasts as long as its longest limit).
    work = [(s, it) for s in settings(cfg) for it in items if s.probes or it["source"] != "probe"]
    work.sort(key=lambda pair: pair[1]["max_tokens"])
    with ctx.progress(len(work), f"{role} answers") as bar:
        for n, start in enumerate(range(0, len(work), BATCH)):  # one batch at a time so the bar moves
            chunk = work[start : start + BATCH]
            requests = [
                GenerationRequest(
                    it["messages"], it["max_tokens"], s.temperature, s.repetition_penalty, s.repetition_context_size
                )
                for s, it in chunk
            ]
            replies = generate_each(model, tokenizer, requests, seed=cfg.eval.seed + n, batch_size=BATCH)
            for (s, it), reply in zip(chunk, replies, strict=True):
                it["answers"].setdefault(s.label, {})[role] = reply
            bar.advance(len(chunk))
    loss = conversation_loss(model, tokenizer, loss_convs) if loss_convs else None
    if loss is not None and not loss["tokens"]:
        loss = None  # no assistant tokens: NaN would make eval.json invalid JSON
    del model, tokenizer
    gc.collect()  # free this model before the next one is loaded (a 3B model is 12 GB in float32)
    ctx.metrics.setdefault("seconds", {})[role] = round(time.perf_counter() - started, 2)
    return {"loss": loss, "conversations": len(loss_convs)}


def tuned_model(ctx: Any, cfg: Config) -> tuple[str, Path | None]:
    """(spec, adapters): the fused folder, else the base model with the trained adapters."""
    fused = ctx.upstream_dir("export") / "model"
    if (fused / "config.json").is_file():
        return str(fused), None
    adapters = ctx.upstream_dir("train") / "adapters"
    if (adapters / "adapter_config.json").is_file():
        return cfg.base_model, adapters
    from engine.errors import RecipeError

    raise RecipeError(f"no tuned model: neither {fused} nor {adapters} exists; rerun `recipe run --force train`")


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    items, loss_convs, train_answers = build_items(cfg, ctx.upstream_dir("split") / "data")
    tuned_spec, adapters = tuned_model(ctx, cfg)
    losses = {
        "base": answer_all(ctx, "base", cfg.base_model, items, loss_convs, cfg),
        "tuned": answer_all(ctx, "tuned", tuned_spec, items, loss_convs, cfg, adapters),
    }
    doc = evaluation(items, losses, train_answers, cfg)
    if cfg.eval.judge:
        doc["judge"] = run_judge(ctx, items, cfg, main_label(cfg))
        doc["summary"].update(judge_summary_fields(doc["judge"]))
    doc = scores.json_safe(doc)
    (ctx.work_dir / "eval.json").write_text(
        json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8"
    )
    ctx.metrics.update(doc["summary"])
    ctx.metrics["sampling"] = doc["sampling"]
    return table_rows(items, main_label(cfg))


def evaluation(items: list[dict], losses: dict, train_answers: list[str], cfg: Config) -> dict:
    """eval.json: settings, per-model scores per setting, probes, items and a flat summary."""
    shares = scores.format_shares(train_answers)
    answered = [it for it in items if it["source"] != "probe"]
    per_setting = {}
    for setting in settings(cfg):
        answers = [it["answers"][setting.label] for it in answered]
        per_setting[setting.label] = {
            role: scores.model_scores([a[role] for a in answers], train_answers, shares, cfg.banned)
            for role in ("base", "tuned")
        }
    probes = probe_results(items, main_label(cfg))
    # Not the file's path: it is not keyed, so a cached eval.json must not depend on it.
    settings_doc = cfg.eval.model_dump(mode="json", exclude={"questions_file"})
    doc = {
        "settings": {"eval": settings_doc, "base_model": cfg.base_model},
        # label -> every parameter; answers and scores are keyed by the same labels, main first
        "sampling": {s.label: s.record() for s in settings(cfg)},
        "train_format_shares": shares,
        "loss": {r: losses[r]["loss"] for r in losses},
        "scores": per_setting,
        "probes": probes,
        "items": [item_record(it) for it in items],
    }
    doc["summary"] = summary(doc, len(answered))
    return doc


def item_record(it: dict) -> dict:
    """One prompt in eval.json: what was asked, how, what was expected, and each model's answers."""
    record = {k: it[k] for k in ("id", "source", "kind", "question", "reference", "max_tokens", "answers")}
    record["expected"] = it["reference"] if it["source"] != "heldout" else None
    probe: EvalQuestion | None = it["probe"]
    if probe is not None:
        record["must_include"] = [w if isinstance(w, str) else list(w) for w in probe.must_include]
        record["passed"] = {role: check["passed"] for role, check in it["checks"].items()}
        record["missing"] = {role: check["missing"] for role, check in it["checks"].items()}
    else:
        record["passed"] = None
    return record


def probe_results(items: list[dict], setting: str) -> dict:
    """Each probe's pass/fail per model on the main setting's answers (also kept on the item)."""
    out: dict[str, Any] = {"setting": setting}
    probes = [it for it in items if it["probe"] is not None]
    for it in probes:
        answers = it["answers"][setting]
        it["checks"] = {role: scores.probe_check(it["probe"], answers[role]) for role in ("base", "tuned")}
    for role in ("base", "tuned"):
        results = [{"id": it["id"], "prompt": it["question"], "passed": it["checks"][role]["passed"]} for it in probes]
        out[role] = {"passed": sum(r["passed"] for r in results), "total": len(results), "items": results}
    return out


def summary(doc: dict, answered: int) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": answered}
    for role in ("base", "tuned"):
        loss = doc["loss"].get(role)
        if loss:
            out[f"{role}_loss"], out[f"{role}_perplexity"] = loss["loss"], loss["perplexity"]
        for setting, by_role in doc["scores"].items():
            s, suffix = by_role[role], doc["sampling"][setting]["summary_suffix"]
            out[f"{role}_format_gap{suffix}"] = s["format"]["gap"]
            out[f"{role}_length_ratio{suffix}"] = s["length"]["ratio"]
            out[f"{role}_loop_rate{suffix}"] = s["loop_rate"]
            out[f"{role}_banned_rate{suffix}"] = s["banned_rate"]
        if doc["probes"][role]["total"]:
            out[f"{role}_probes_passed"] = doc["probes"][role]["passed"]
    out["probes_total"] = doc["probes"]["tuned"]["total"]
    out["heldout_loss_tokens"] = (doc["loss"].get("tuned") or {}).get("tokens", 0)
    for label, record in doc["sampling"].items():  # which setting each suffix's scores are from
        out[f"setting{record['summary_suffix']}"] = label
    return {k: v for k, v in out.items() if v is not None}


def run_judge(ctx: StepContext, items: list[dict], cfg: Config, setting: str) -> dict:
    """Pairwise judge on the main setting's answers, asked in both orders so position bias cancels out."""
    from engine.llm.client import LLMRequest, client_for

    assert cfg.judge_prompt is not None and cfg.judge_llm is not None  # config() sets both when judging
    judged = [it for it in items if it["source"] != "probe"]
    requests = []
    for it in judged:
        pair = it["answers"][setting]
        for order, (a, b) in (("tb", (pair["tuned"], pair["base"])), ("bt", (pair["base"], pair["tuned"]))):
            prompt = cfg.judge_prompt.format(creator=cfg.creator, question=it["question"], a=a, b=b)
            requests.append(LLMRequest(f"{it['id']}:{order}", [{"role": "user", "content": prompt}], JUDGE_SCHEMA))
    with ctx.progress(len(requests), "judge") as bar:
        results = {r.id: r for r in client_for(ctx, cfg.judge_llm).run_many(requests, bar)}
    verdicts = []
    for it in judged:
        first, second = results[f"{it['id']}:tb"], results[f"{it['id']}:bt"]
        if not (first.ok and second.ok):
            it["verdict"], it["judge_reason"] = "failed", first.reason or second.reason
            continue
        it["verdict"] = scores.judge_verdict(first.value["winner"], second.value["winner"])
        verdicts.append(it["verdict"])
    failed = len(judged) - len(verdicts)
    return {
        **scores.judge_summary(verdicts),
        "setting": setting,
        "failed": failed,
        "items": [{"id": it["id"], "verdict": it["verdict"]} for it in judged],
    }


def judge_summary_fields(judge: dict) -> dict[str, Any]:
    fields = {
        "judge_tuned_wins": judge["tuned_wins"],
        "judge_base_wins": judge["base_wins"],
        "judge_ties": judge["ties"],
        "judge_failed": judge["failed"],
    }
    if judge["tuned_win_rate"] is not None:
        fields["judge_tuned_win_rate"] = judge["tuned_win_rate"]
    return fields


def table_rows(items: list[dict], main: str) -> list[dict]:
    rows = []
    for it in items:
        for setting, pair in it["answers"].items():
            judged = setting == main and "verdict" in it
            failed = judged and it["verdict"] == "failed"
            rows.append(
                {
                    "id": it["id"],
                    "source": it["source"],
                    "question": it["question"],
                    "setting": setting,
                    "base": pair["base"],
                    "tuned": pair["tuned"],
                    "reference": it["reference"],
                    "base_loop": scores.repetition(pair["base"])["loop"],
                    "tuned_loop": scores.repetition(pair["tuned"])["loop"],
                    "verdict": it["verdict"] if judged else None,
                    "status": "failed" if failed else "ok",
                    "reason": f"judge: {it.get('judge_reason')}" if failed else None,
                }
            )
    return rows
