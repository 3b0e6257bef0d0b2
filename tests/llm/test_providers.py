"""The provider hook of the LLM client: picked by prefix, plain litellm by default, ours loaded lazily."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.llm import providers
from engine.llm.client import LLMClient, LLMRequest
from engine.llm.providers import LITELLM, provider_for, register_provider
from engine.pipeline.hashing import digest
from engine.recipe.shared import LLMParams
from fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


def params(model: str, **kw) -> LLMParams:  # noqa: ANN003
    base = {
        "model": model,
        "api_base": None,
        "temperature": 0.0,
        "max_tokens": 20,
        "max_concurrency": 2,
        "requests_per_minute": 0,
        "timeout": 5.0,
        "retries": 0,
        "reask": 0,
    }
    return LLMParams(**{**base, **kw})


def test_any_other_model_is_plain_litellm_with_a_timeout() -> None:
    provider = provider_for("openai/gpt-4o-mini")
    assert provider is LITELLM and provider.litellm_model("openai/gpt-4o-mini") == "openai/gpt-4o-mini"
    p = params("openai/gpt-4o-mini", timeout=7.0)
    assert provider.call_kwargs(p) == {"timeout": 7.0, "max_retries": 0} and provider.deadline(p) == 12.0


def test_cache_keys_of_plain_models_are_unchanged_and_local_settings_count() -> None:
    messages = [{"role": "user", "content": "hi"}]
    plain = LLMClient(params("openai/fake")).cache_key(messages)
    assert plain == digest(
        {"model": "openai/fake", "messages": messages, "params": {"temperature": 0.0, "max_tokens": 20}}
    )  # keys made before providers
    local = LLMClient(params("mlx:models/tiny")).cache_key(messages)
    from engine.llm.mlx_provider import generation_settings

    assert local == digest(
        {
            "model": "mlx:models/tiny",
            "messages": messages,
            "params": {"temperature": 0.0, "max_tokens": 20, "local": generation_settings()},
        }
    )


def test_mlx_provider_is_imported_only_for_an_mlx_model() -> None:
    """A fresh process: the client alone loads neither the MLX module nor mlx itself."""
    script = (
        "import sys\n"
        "from engine.llm.client import LLMClient\n"
        "from engine.llm.providers import provider_for\n"
        "provider_for('openai/x')\n"
        "assert 'engine.llm.mlx_provider' not in sys.modules\n"
        "provider = provider_for('mlx:some/model')\n"
        "assert type(provider).__name__ == 'MlxProvider', provider\n"
        "assert provider.litellm_model('mlx:some/model') == 'mlx/some/model'\n"
        "assert provider.deadline(None) is None\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'litellm')]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr


class Renamed:
    """A provider of our own: `renamed:<model>` is served as `openai/<model>`, with extras."""

    def __init__(self) -> None:
        self.contexts: list[dict] = []

    def litellm_model(self, model: str) -> str:
        return "openai/" + model.removeprefix("renamed:")

    def cache_settings(self) -> dict:
        return {"flavour": 1}

    def setup(self, context: dict) -> None:
        self.contexts.append(context)

    def call_kwargs(self, params: LLMParams) -> dict:
        return {"seed": 7}

    def deadline(self, params: LLMParams) -> float | None:
        return 30.0


def test_a_registered_provider_is_used_by_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(providers, "_registered", dict(providers._registered))
    provider = Renamed()
    register_provider("renamed:", provider)
    with FakeOpenAI(lambda body: "hello") as srv:
        client = LLMClient(params("renamed:fake", api_base=srv.base_url), context={"models_dir": "m"})
        [result] = client.run_many([LLMRequest("r0", [{"role": "user", "content": "hi"}])])
    assert result.ok and result.text == "hello"
    assert srv.requests[0]["model"] == "fake" and srv.requests[0]["seed"] == 7
    assert provider.contexts == [{"models_dir": "m"}]
    assert client.cache_key([]) != LLMClient(params("openai/fake")).cache_key([])


def test_no_import_cycles_between_llm_modules() -> None:
    """Function-level imports count too: a cycle hidden in a function is still a cycle."""
    package = ROOT / "engine" / "llm"
    modules = {f"engine.llm.{f.stem}" for f in package.glob("*.py") if f.stem != "__init__"}
    graph = {m: _engine_imports(package / f"{m.rsplit('.', 1)[1]}.py") & modules for m in modules}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert [m for m in sorted(modules) if reaches(m, m, {m})] == []


def _engine_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_local_generation_stops_within_a_token_when_the_run_is_interrupted(tiny_llama: Path, tmp_path: Path) -> None:
    """Ctrl-C cancels the batch's task; the generating thread must not run the batch to its end."""
    pytest.importorskip("mlx_lm")
    import threading
    import time

    from engine.llm import mlx_provider
    from engine.models.generate import GenerationStopped

    conversations = [[{"role": "user", "content": f"Why fast {i}?"}] for i in range(4)]
    context = {"models_dir": tmp_path / "models"}
    mlx_provider.generate(str(tiny_llama), context, conversations[:1], 2, 0.0)  # loaded before timing
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(GenerationStopped):
        mlx_provider.generate(str(tiny_llama), context, conversations, 100_000, 0.0, stop)
    assert time.monotonic() - started < 3


def test_the_mlx_model_loads_on_a_thread_while_litellm_is_imported(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's warm-up starts loading the local model before it imports litellm; the first
    call then finds it loaded (one load, made on the warm-up thread) and generates."""
    pytest.importorskip("mlx_lm")
    import threading

    from engine.llm import mlx_provider
    from engine.models import resolve

    loaded_on: list[str] = []
    load_model = resolve.load_model

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loaded_on.append(threading.current_thread().name)
        return load_model(*args, **kwargs)

    monkeypatch.setattr(resolve, "load_model", recording)
    context = {"models_dir": tmp_path / "models"}
    client = LLMClient(params(f"mlx:{tiny_llama}", max_tokens=4), context=context)
    (result,) = client.run_many([LLMRequest(id="k", messages=[{"role": "user", "content": "Why fast?"}])])
    assert result.usage["completion_tokens"] > 0  # it generated (a random tiny model's words fail validation)
    assert loaded_on == ["recipe-model-warm-up"]
    mlx_provider.MlxProvider().warm_up(f"mlx:{tiny_llama}", context)  # loaded: no second load
    assert loaded_on == ["recipe-model-warm-up"]


def test_a_failed_warm_up_leaves_the_error_to_the_first_call(tmp_path: Path) -> None:
    from engine.errors import RecipeError
    from engine.llm import mlx_provider

    missing = tmp_path / "no-such-model"
    context = {"models_dir": tmp_path / "models"}
    mlx_provider.MlxProvider().warm_up(f"mlx:{missing}", context)
    with pytest.raises(RecipeError, match="no such folder or file"):
        mlx_provider.load(str(missing), tmp_path / "models", None)
