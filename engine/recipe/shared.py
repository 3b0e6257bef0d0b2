"""The recipe sections no single step owns: name, creator, the LLM settings and the prompts.

Step-owned sections (``questions``, ``filters``, ``train``, ...) are declared in their step
modules; engine.pipeline.recipes assembles the whole `Recipe` model from both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field, PrivateAttr, model_serializer

from engine.recipe.section import Section, prompt_field

_MODEL_HELP = (
    "Any litellm model id (`openai/gpt-4o-mini`, `anthropic/claude-3-5-haiku-latest`, `ollama/llama3.1`), "
    "or `mlx:<path or package:...>` for the in-process local MLX provider. API keys are read from the "
    "provider's usual environment variable, never from the recipe."
)
_API_BASE_HELP = (
    "Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1); null for the provider default. "
    "No credentials in it (`?api_key=`, `user:password@`): the recipe is copied into the run folder, so the "
    "key goes in the provider's environment variable (e.g. OPENAI_API_KEY)."
)


class Creator(Section):
    """Whose voice the model learns."""

    name: str = Field(min_length=1, description="The creator's name as prompts should use it (`{creator}`).")
    handle: str | None = Field(None, description="Channel handle, e.g. `@drjasonfung`.")
    language: str = Field(
        "en", pattern="^[a-z]{2}$", description="Language of the transcripts and answers (ISO 639-1)."
    )


class LLMParams(Section):
    """One fully resolved LLM setting: a pass's override merged over `llm`.

    Only the model, sampling and re-asking change what comes back; the endpoint (the same model
    served elsewhere, as in the response cache), concurrency, rate limits, timeouts and retries
    change how fast it comes, so they never enter a step key.
    """

    UNKEYED: ClassVar[frozenset[str]] = frozenset(
        {"api_base", "max_concurrency", "requests_per_minute", "timeout", "retries"}
    )

    model: str = Field("openai/gpt-4o-mini", description=_MODEL_HELP)
    api_base: str | None = Field(None, description=_API_BASE_HELP)
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(4096, ge=1, description="Most tokens one response may have.")
    max_concurrency: int = Field(8, ge=1, description="Most requests in flight at once.")
    requests_per_minute: float = Field(0, ge=0, description="Rate limit; 0 means unlimited.")
    timeout: float = Field(120, gt=0, description="Seconds before one request is abandoned and retried.")
    retries: int = Field(
        5, ge=0, description="Retries on 429, 5xx, timeouts and connection errors, with exponential backoff and jitter."
    )
    reask: int = Field(
        2, ge=0, description="Times an answer that fails its JSON schema is asked again with the validation error."
    )


class LLMOverride(Section):
    """Per-pass override of any `llm` field; unset fields inherit from `llm`."""

    @model_serializer(mode="wrap")
    def _only_what_was_set(self, handler: Any) -> dict[str, Any]:
        """resolved.json shows what the recipe overrides, not nine nulls meaning "inherit"."""
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}

    model: str | None = Field(None, description=_MODEL_HELP)
    api_base: str | None = Field(None, description=_API_BASE_HELP)
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens one response may have.")
    max_concurrency: int | None = Field(None, ge=1, description="Most requests in flight at once.")
    requests_per_minute: float | None = Field(None, ge=0, description="Rate limit; 0 means unlimited.")
    timeout: float | None = Field(None, gt=0, description="Seconds before one request is abandoned.")
    retries: int | None = Field(None, ge=0, description="Retries on 429, 5xx, timeouts and connection errors.")
    reask: int | None = Field(None, ge=0, description="Times an invalid answer is asked again.")


class LLM(LLMParams):
    """The model that writes questions and answers (through litellm)."""

    # One field per LLM pass of the registered steps, each an LLMOverride (assembled with the recipe).
    passes: BaseModel = Field(
        default_factory=Section, description="Overrides per pass, e.g. a cheaper model for paraphrases."
    )

    def for_pass(self, name: str) -> LLMParams:
        """The settings of one pass: the override's fields that were set, else the shared ones."""
        base = {field: getattr(self, field) for field in LLMParams.model_fields}
        override = getattr(self.passes, name, None)
        if override is not None:
            base.update({field: getattr(override, field) for field in override.model_fields_set})
        return LLMParams(**base)


class Prompts(Section):
    """Prompt templates. Placeholders in braces; write `{{` and `}}` for literal braces."""

    system: str = prompt_field(
        (
            "You are {creator}. You explain health and science the way you do in your talks: plainly, with "
            "analogies, in your own voice."
        ),
        allowed={"creator"},
        required=set(),
        description="System message for generation.",
    )
    questions: str = prompt_field(
        (
            'Below is the transcript of a talk by {creator} titled "{title}".\n\nList the questions this talk '
            "answers, between {min_questions} and {max_questions} of them. Each question must stand on its own: "
            "a curious viewer could ask it without having seen the talk. Do not mention {creator}, the talk, the "
            'video or the transcript in a question.\n\nReply with JSON only: {{"questions": [{{"question": '
            '"...", "tags": ["..."]}}]}}\n\nTranscript:\n{transcript}'
        ),
        allowed={"creator", "max_questions", "min_questions", "title", "transcript"},
        required={"transcript"},
        description="Pass 1.",
    )
    answers: str = prompt_field(
        (
            'You are {creator}. Below is the transcript of your talk "{title}" and numbered questions a viewer '
            "asked.\n\nAnswer every question in your own voice, using only what the talk says. Write in "
            "paragraphs, put **key terms** in bold, and use a list where it helps. Scale the length to the "
            'question. Never say "the transcript", "in this video" or "as mentioned".\n\nReply with JSON only: '
            '{{"answers": [{{"number": 1, "answer": "..."}}]}}\n\nQuestions:\n{questions}\n\nTranscript:\n'
            "{transcript}"
        ),
        allowed={"creator", "questions", "title", "transcript"},
        required={"questions", "transcript"},
        description="Pass 2.",
    )
    standalone: str = prompt_field(
        (
            "Does this question make sense on its own, without seeing any video? Reply with JSON only: "
            '{{"standalone": true}}\n\nQuestion: {question}'
        ),
        allowed={"creator", "question"},
        required={"question"},
        description="Optional check that a question stands alone.",
    )
    paraphrase: str = prompt_field(
        (
            "Rewrite this question {n} different ways, keeping its meaning. Reply with JSON only: "
            '{{"paraphrases": ["..."]}}\n\nQuestion: {question}'
        ),
        allowed={"creator", "n", "question"},
        required={"question"},
        description="Augmentation.",
    )
    short: str = prompt_field(
        (
            "You are {creator}. Rewrite this answer in your own voice in at most three sentences, keeping the "
            'key point and any **bold** key term. Reply with JSON only: {{"answer": "..."}}\n\nQuestion: '
            "{question}\n\nAnswer:\n{answer}"
        ),
        allowed={"answer", "creator", "question"},
        required={"answer"},
        description="Augmentation, short answer.",
    )
    long: str = prompt_field(
        (
            "You are {creator}. Expand this answer in your own voice: more explanation, an analogy, and a short "
            'list where it helps, with no facts beyond the original. Reply with JSON only: {{"answer": "..."}}\n'
            "\nQuestion: {question}\n\nAnswer:\n{answer}"
        ),
        allowed={"answer", "creator", "question"},
        required={"answer"},
        description="Augmentation, long answer.",
    )
    translate: str = prompt_field(
        'Translate this text into {language}. Reply with JSON only: {{"text": "..."}}\n\nText: {text}',
        allowed={"language", "text"},
        required={"language", "text"},
        description="Back-translation.",
    )
    score: str = prompt_field(
        (
            "Rate this answer from 0 to 100 for how well it answers the question clearly, accurately and in a "
            'consistent personal voice. Reply with JSON only: {{"score": 0}}\n\nQuestion: {question}\n\nAnswer:\n'
            "{answer}"
        ),
        allowed={"answer", "creator", "question"},
        required={"answer"},
        description="Quality score 0-100.",
    )
    judge: str = prompt_field(
        (
            "Two answers to the same question follow. Which one sounds more like {creator} and answers better? "
            'Reply with JSON only: {{"winner": "A"}} or {{"winner": "B"}} or {{"winner": "tie"}}\n\nQuestion: '
            "{question}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}"
        ),
        allowed={"a", "b", "creator", "question"},
        required={"a", "b"},
        description="Pairwise judge.",
    )


class RecipeBase(Section):
    """One recipe: from a creator's videos to a LoRA fine-tuned local model that answers in their voice."""

    name: str = Field(
        pattern="^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Short name of this recipe; used in run listings."
    )
    description: str = Field("", description="Free text about this recipe.")
    creator: Creator
    llm: LLM = Field(default_factory=LLM, description=LLM.__doc__)
    prompts: Prompts = Field(default_factory=Prompts, description=Prompts.__doc__)

    # Where the recipe file lives: relative paths resolve against it. Never hashed.
    _base_dir: Path = PrivateAttr(default=Path("."))

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def located_at(self, base_dir: Path) -> RecipeBase:
        self._base_dir = base_dir
        return self

    if TYPE_CHECKING:  # step sections are added by the registry, so their types are not static

        def __getattr__(self, name: str) -> Any: ...


def render_system_prompt(template: str | None, creator: str) -> str | None:
    """The rendered system prompt (only {creator} is allowed; {{ }} are literal braces).

    Training data, the Modelfile, evaluation and `recipe ask` all use this, so the model is
    asked exactly the way it was trained.
    """
    return template.format(creator=creator) if template else None
