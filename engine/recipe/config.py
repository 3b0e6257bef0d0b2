"""Typed, frozen view of a validated recipe.

`engine.recipe.load.load_recipe` validates the YAML against the JSON Schema and fills every default
from it; these dataclasses are what the rest of the engine sees. Defaults live in the schema
only, so the fields here carry none (except optional ones that may be absent).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union


@dataclass(frozen=True)
class Creator:
    name: str
    handle: Optional[str]
    language: str


@dataclass(frozen=True)
class LocalSource:
    type: Literal["local"]
    path: str
    format: str
    sidecar: bool


@dataclass(frozen=True)
class YoutubeSource:
    type: Literal["youtube"]
    url: Optional[str]
    videos: tuple[str, ...]
    max_videos: Optional[int]
    title_include: tuple[str, ...]
    title_exclude: tuple[str, ...]
    min_duration: Optional[float]
    max_duration: Optional[float]
    after: Optional[str]
    before: Optional[str]
    exclude_ids: tuple[str, ...]


@dataclass(frozen=True)
class Clean:
    strip_cues: bool
    merge_overlaps: bool
    normalize_whitespace: bool


@dataclass(frozen=True)
class Chunking:
    mode: str
    window_tokens: int
    overlap_tokens: int


@dataclass(frozen=True)
class Transcripts:
    languages: tuple[str, ...]
    prefer_manual: bool
    fallback_ytdlp: bool
    clean: Clean
    requests_per_second: float
    retries: int
    backoff: float
    timeout: float
    chunking: Chunking


@dataclass(frozen=True)
class LLMParams:
    """One fully resolved LLM setting (a pass's override merged over `llm`)."""

    model: str
    api_base: Optional[str]
    temperature: float
    max_tokens: int
    max_concurrency: int
    requests_per_minute: float
    timeout: float
    retries: int
    reask: int


@dataclass(frozen=True)
class LLM:
    model: str
    api_base: Optional[str]
    temperature: float
    max_tokens: int
    max_concurrency: int
    requests_per_minute: float
    timeout: float
    retries: int
    reask: int
    passes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_pass(self, name: str) -> LLMParams:
        """The settings of one pass: its override fields, else the shared ones."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(LLMParams)}
        base.update(self.passes.get(name, {}))
        return LLMParams(**base)


@dataclass(frozen=True)
class Prompts:
    system: str
    questions: str
    answers: str
    standalone: str
    paraphrase: str
    short: str
    long: str
    translate: str
    score: str
    judge: str


@dataclass(frozen=True)
class Questions:
    min_per_video: int
    max_per_video: int
    tags: bool
    drop_creator_mentions: bool
    standalone_check: bool


@dataclass(frozen=True)
class Dedup:
    enabled: bool
    scorer: str
    threshold: float
    workers: int


@dataclass(frozen=True)
class AnswerLength:
    unit: str
    min: int
    max: Optional[int]


@dataclass(frozen=True)
class Formatting:
    require: tuple[str, ...]
    mode: str
    min_share: float


@dataclass(frozen=True)
class LLMScore:
    enabled: bool
    keep_top: float


@dataclass(frozen=True)
class Filters:
    dedup: Dedup
    answer_length: AnswerLength
    formatting: Formatting
    banned_phrases: tuple[str, ...]
    require_language: bool
    llm_score: LLMScore


@dataclass(frozen=True)
class BackTranslation:
    enabled: bool
    pivot: str


@dataclass(frozen=True)
class Augment:
    paraphrases: int
    short_answers: bool
    long_answers: bool
    back_translation: BackTranslation


@dataclass(frozen=True)
class Split:
    valid: float
    test: float
    by: str
    seed: int
    system_prompt: Optional[str]

    def system_message(self, creator: str) -> Optional[str]:
        """The rendered system prompt (validation allows only {creator}; {{ }} are literal braces).

        Training data, the Modelfile and `recipe ask` all use this, so the model is asked exactly
        the way it was trained.
        """
        return render_system_prompt(self.system_prompt, creator)


def render_system_prompt(template: Optional[str], creator: str) -> Optional[str]:
    return template.format(creator=creator) if template else None


@dataclass(frozen=True)
class LRSchedule:
    name: str
    warmup: int
    min_lr: float


@dataclass(frozen=True)
class Lora:
    rank: int
    scale: float
    dropout: float
    layers: int
    keys: Optional[tuple[str, ...]]


@dataclass(frozen=True)
class Train:
    model: str
    learning_rate: Union[float, tuple[float, ...]]
    lr_schedule: LRSchedule
    batch_size: int
    grad_accumulation: int
    iters: Optional[int]
    epochs: Optional[float]
    max_seq_length: int
    lora: Lora
    fine_tune_type: str
    mask_prompt: bool
    grad_checkpoint: bool
    seed: int
    steps_per_report: int
    steps_per_eval: int
    val_batches: int
    sweep_fraction: float
    dtype: str

    @property
    def learning_rates(self) -> tuple[float, ...]:
        lr = self.learning_rate
        return tuple(lr) if isinstance(lr, tuple) else (lr,)


@dataclass(frozen=True)
class GGUF:
    enabled: bool
    type: str


@dataclass(frozen=True)
class Export:
    fuse: bool
    gguf: GGUF
    modelfile: bool


@dataclass(frozen=True)
class Eval:
    questions: tuple[str, ...]
    heldout: int
    max_tokens: int
    sampled: bool
    temperature: float
    seed: int
    repetition_penalty: float
    probes: bool
    judge: bool


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    creator: Creator
    sources: tuple[Union[LocalSource, YoutubeSource], ...]
    transcripts: Transcripts
    llm: LLM
    prompts: Prompts
    questions: Questions
    filters: Filters
    augment: Augment
    split: Split
    train: Train
    export: Export
    eval: Eval
    # Where the recipe file lives: relative source paths resolve against it. Not hashed.
    base_dir: Path = field(default=Path("."), compare=False)


def build(cls: type, data: Any) -> Any:
    """Build a (nested) frozen dataclass from validated, default-filled data."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name])
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value)
    if origin in (Union, types.UnionType):
        return _coerce_union(args, value)
    if origin is tuple:
        return tuple(_coerce(args[0], v) for v in value)
    if origin is dict:
        return {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def _coerce_union(args: tuple, value: Any) -> Any:
    if isinstance(value, dict) and "type" in value:  # tagged source union
        for arg in args:
            if dataclasses.is_dataclass(arg) and typing.get_args(typing.get_type_hints(arg)["type"]) == (value["type"],):
                return build(arg, value)
    if isinstance(value, list):
        return tuple(value)
    non_none = [a for a in args if a is not type(None)]
    return _coerce(non_none[0], value) if len(non_none) == 1 else value
