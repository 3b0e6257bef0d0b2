"""augment: more training rows from the curated ones (paraphrases, answer variants, back-translation).

Every curated row passes through as kind='original'. Each augmented row keeps `origin_id` and
the video of its origin, which is how `split` keeps it on its origin's side. All LLM calls go
through the cached client, so a re-run (or a killed run resumed) asks nothing twice. With every
augmentation off the step is a pass-through and makes no calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from engine.data.dedup import normalise
from engine.pipeline.hashing import digest
from engine.recipe.section import Section
from engine.recipe.shared import LLMParams
from engine.steps.base import Inputs, Recipe, StepContext

NAME = "augment"
VERSION = 3  # 3: every generated text must be prose (see engine.llm.json_reply.prose_error)
DEPENDS = ("curate",)
COLUMNS = {
    "id": "VARCHAR",
    "origin_id": "VARCHAR",
    "video_id": "VARCHAR",
    "title": "VARCHAR",
    "kind": "VARCHAR",
    "question": "VARCHAR",
    "answer": "VARCHAR",
    "tags": "VARCHAR[]",
    "status": "VARCHAR",
    "reason": "VARCHAR",
}
COLUMN_DOCS = {  # COMMENT ON COLUMN in each run's data.duckdb
    "id": "The row's id (an original keeps curate.id).",
    "origin_id": "The curated row it was made from (its own id for an original).",
    "video_id": "The video it comes from.",
    "title": "The video's title.",
    "kind": "original, or the augmentation that made it: paraphrase | short | long | back_translation.",
    "question": "The question.",
    "answer": "The answer.",
    "tags": "Topic tags.",
}

PARAPHRASES = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
ANSWER = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string", "minLength": 1}}}
TEXT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}}

# Prompts name languages, recipes store codes: the common ones get their English name.
LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ja": "Japanese",
    "zh": "Chinese",
}


SECTION = "augment"
LLM_PASSES = ("augment",)
RETRY_FAILED_ROWS = True  # --retry-failed reruns it: finished calls come from the LLM cache


class BackTranslation(Section):
    """Paraphrase questions through a pivot language."""

    enabled: bool = Field(False, description="Translate each question to `pivot` and back.")
    pivot: str = Field("French", description="Pivot language name, e.g. French.")


class AugmentSettings(Section):
    """More training rows from the curated ones; augmented rows stay with their video's split."""

    paraphrases: int = Field(0, ge=0, le=10, description="Paraphrases per question (0: none).")
    short_answers: bool = Field(False, description="Add a short variant of each answer.")
    long_answers: bool = Field(False, description="Add a long variant of each answer.")
    back_translation: BackTranslation = Field(default_factory=BackTranslation, description=BackTranslation.__doc__)


Settings = AugmentSettings


@dataclass(frozen=True)
class Config:
    augment: AugmentSettings
    # Prompts, language and model only matter (and only key the step) when it calls the LLM.
    creator: str | None = None
    language: str | None = None
    prompts: Mapping[str, str] | None = None
    llm: LLMParams | None = None

    def prompt(self, name: str) -> str:
        if self.prompts is None:
            raise ValueError(f"augment: no prompts in the config, yet {name!r} was asked for")
        return self.prompts[name]


def config(recipe: Recipe) -> Config:
    aug: AugmentSettings = recipe.augment
    if not _enabled(aug):
        return Config(aug)
    prompts = {k: getattr(recipe.prompts, k) for k in ("paraphrase", "short", "long", "translate")}
    return Config(aug, recipe.creator.name, recipe.creator.language, prompts, recipe.llm.for_pass("augment"))


def _enabled(aug: AugmentSettings) -> bool:
    return bool(aug.paraphrases or aug.short_answers or aug.long_answers or aug.back_translation.enabled)


def run(ctx: StepContext, inputs: Inputs, cfg: Config) -> list[dict]:
    origins = sorted(inputs["curate"].ok_rows(), key=lambda r: (r["video_id"], r["id"]))
    rows = [_row(o, "original", o["question"], o["answer"]) for o in origins]
    aug = cfg.augment
    if _enabled(aug) and origins:
        from engine.llm.client import client_for  # lazy: litellm only when augmenting

        assert cfg.llm is not None and cfg.prompts is not None  # config() sets them when enabled
        client = client_for(ctx, cfg.llm)
        if aug.paraphrases:
            rows += _paraphrases(ctx, client, cfg, origins, aug.paraphrases)
        for kind, on in (("short", aug.short_answers), ("long", aug.long_answers)):
            if on:
                rows += _answer_variants(ctx, client, cfg, origins, kind)
        if aug.back_translation.enabled:
            rows += _back_translate(ctx, client, cfg, origins, aug.back_translation.pivot)
    _summarise(ctx, rows)
    return rows


def _row(
    origin: dict, kind: str, question: str, answer: str, n: int = 0, status: str = "ok", reason: str | None = None
) -> dict:
    rid = origin["id"] if kind == "original" else digest([origin["id"], kind, n])[:16]
    return {
        "id": rid,
        "origin_id": origin["id"],
        "video_id": origin["video_id"],
        "title": origin.get("title"),
        "kind": kind,
        "question": question,
        "answer": answer,
        "tags": list(origin.get("tags") or []),
        "status": status,
        "reason": reason,
    }


def _reader(schema: dict, text_field: str | None) -> Any:
    """Reads a reply against `schema`; the generated text(s) in it must be prose too, so that
    JSON or markup inside a valid shape is re-asked like any invalid reply, never kept."""
    from engine.llm.json_reply import parse, prose_error

    def read(text: str) -> tuple[Any, str | None]:
        value, error = parse(text, schema)
        if error is None:
            texts = value if text_field is None else [value[text_field]]
            error = next((e for t in texts if (e := prose_error(str(t), f"the {text_field or 'item'}"))), None)
        return (None, error) if error else (value, None)

    return read


def _ask(
    ctx: Any, client: Any, label: str, prompts: list[tuple[str, str]], schema: dict, text_field: str | None
) -> list[Any]:
    """Run (id, user prompt) pairs; returns the LLM results in order."""
    from engine.llm.client import LLMRequest

    read = _reader(schema, text_field)
    requests = [LLMRequest(rid, [{"role": "user", "content": text}], schema, read) for rid, text in prompts]
    with ctx.progress(len(requests), label) as bar:
        return client.run_many(requests, bar)


def _paraphrases(ctx: Any, client: Any, cfg: Config, origins: list[dict], n: int) -> list[dict]:
    template = cfg.prompt("paraphrase")
    results = _ask(
        ctx,
        client,
        "paraphrasing",
        # every placeholder the prompt may declare (engine.recipe.shared.Prompts.paraphrase)
        [(o["id"], template.format(question=o["question"], n=n, creator=cfg.creator)) for o in origins],
        PARAPHRASES,
        None,
    )
    rows = []
    for origin, result in zip(origins, results, strict=True):
        if not result.ok:
            rows.append(
                _row(origin, "paraphrase", "", origin["answer"], 0, "failed", f"paraphrase failed: {result.reason}")
            )
            continue
        seen = {normalise(origin["question"])}
        fresh = []
        for text in result.value:  # drop echoes of the question and repeats of each other
            if normalise(text) and normalise(text) not in seen:
                seen.add(normalise(text))
                fresh.append(text.strip())
        rows += [_row(origin, "paraphrase", q, origin["answer"], i) for i, q in enumerate(fresh[:n])]
        if not fresh:
            rows.append(_row(origin, "paraphrase", "", origin["answer"], 0, "skipped", "no new paraphrase"))
    return rows


def _answer_variants(ctx: Any, client: Any, cfg: Config, origins: list[dict], kind: str) -> list[dict]:
    template = cfg.prompt(kind)
    results = _ask(
        ctx,
        client,
        f"{kind} answers",
        [
            (f"{o['id']}:{kind}", template.format(creator=cfg.creator, question=o["question"], answer=o["answer"]))
            for o in origins
        ],
        ANSWER,
        "answer",
    )
    rows = []
    for origin, result in zip(origins, results, strict=True):
        if result.ok:
            rows.append(_row(origin, kind, origin["question"], result.value["answer"].strip()))
        else:
            rows.append(
                _row(origin, kind, origin["question"], "", 0, "failed", f"{kind} answer failed: {result.reason}")
            )
    return rows


def _back_translate(ctx: Any, client: Any, cfg: Config, origins: list[dict], pivot: str) -> list[dict]:
    template = cfg.prompt("translate")
    language = cfg.language or "en"
    home = LANGUAGE_NAMES.get(language.split("-")[0].lower(), language)
    there = _ask(
        ctx,
        client,
        f"translating to {pivot}",
        [(f"{o['id']}:to", template.format(language=pivot, text=o["question"])) for o in origins],
        TEXT,
        "text",
    )
    todo = [(o, r.value["text"]) for o, r in zip(origins, there, strict=True) if r.ok]
    back = _ask(
        ctx,
        client,
        f"translating back to {home}",
        [(f"{o['id']}:back", template.format(language=home, text=text)) for o, text in todo],
        TEXT,
        "text",
    )
    returned = {o["id"]: r for (o, _), r in zip(todo, back, strict=True)}
    rows = []
    for origin, first in zip(origins, there, strict=True):
        result = returned.get(origin["id"])
        if not first.ok or result is None or not result.ok:
            why = first.reason if not first.ok else (result.reason if result else "no result")
            rows.append(
                _row(origin, "back_translation", "", origin["answer"], 0, "failed", f"back-translation failed: {why}")
            )
        elif normalise(result.value["text"]) == normalise(origin["question"]):
            rows.append(
                _row(
                    origin,
                    "back_translation",
                    result.value["text"],
                    origin["answer"],
                    0,
                    "skipped",
                    "back-translation identical to the question",
                )
            )
        else:
            rows.append(_row(origin, "back_translation", result.value["text"].strip(), origin["answer"]))
    return rows


def _summarise(ctx: Any, rows: list[dict]) -> None:
    from collections import Counter

    ok = [r for r in rows if r["status"] == "ok"]
    ctx.metrics.update(
        rows=len(ok),
        originals=sum(r["kind"] == "original" for r in ok),
        augmented=sum(r["kind"] != "original" for r in ok),
        failed=sum(r["status"] == "failed" for r in rows),
        skipped=sum(r["status"] == "skipped" for r in rows),
        kinds=dict(Counter(r["kind"] for r in ok)),
    )
