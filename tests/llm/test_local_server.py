"""A server on this machine (llama.cpp, Ollama, vLLM, LM Studio) needs no API key in the environment.

The fake OpenAI-compatible server listens on 127.0.0.1, like a local server; litellm talks to it
over real HTTP. Where it answers a 401 it echoes the Authorization header it received, as real
servers do, which shows which key was sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import LLMUnavailable
from engine.llm.client import LLMClient, LLMRequest
from engine.llm.providers import LOCAL_SERVER_KEY, is_loopback
from engine.recipe.shared import LLMParams
from fakes.openai_server import ErrorReply, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
HELLO = [LLMRequest("q1", [{"role": "user", "content": "Say hello."}])]


def client(api_base: str, model: str = "openai/local-model") -> LLMClient:
    return LLMClient(LLMParams(model=model, api_base=api_base, retries=0, reask=0, timeout=10))


@pytest.fixture()
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.endswith("_API_KEY")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://127.8.0.9:8080/v1",  # all of 127.0.0.0/8 is loopback
        "http://localhost:11434/v1",
        "HTTP://LocalHost.:1234/v1",  # case and a trailing dot
        "http://api.localhost:8000/v1",  # RFC 6761
        "http://[::1]:8000/v1",
        "http://[::ffff:127.0.0.1]:8000/v1",  # IPv4-mapped
        "http://[::1%25lo]:8000/v1",  # with a zone
        "http://0.0.0.0:8000/v1",  # what a server prints as where it listens
        "localhost:8080/v1",  # no scheme
        "  http://127.0.0.1:8080/v1  ",
    ],
)
def test_addresses_on_this_machine_are_loopback(url: str) -> None:
    assert is_loopback(url)


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "https://api.openai.com/v1",
        "http://192.168.1.20:8000/v1",  # another machine on the LAN: its own rules
        "http://127.0.0.1.nip.io:8000/v1",  # a public name that spells a loopback address
        "http://localhost.evil.com/v1",
        "http://evil.com/localhost/v1",
        "http://evil.com/?host=127.0.0.1",
        "http://[::1/v1",  # malformed IPv6: not ours to guess
        "http://128.0.0.1/v1",
        "http://[::2]/v1",
    ],
)
def test_other_addresses_are_not(url: str | None) -> None:
    assert not is_loopback(url)


def test_a_loopback_server_answers_with_no_key_in_the_environment(no_key: None) -> None:
    with FakeOpenAI(lambda body: "Hello from the local server.") as srv:
        [result] = client(srv.base_url).run_many(HELLO)
    assert result.ok and result.value == "Hello from the local server." and srv.calls == 1


def test_the_placeholder_is_sent_only_when_the_environment_has_no_key(
    no_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = ErrorReply(401, "Incorrect API key provided: {authorization}", "invalid_api_key")
    with FakeOpenAI(lambda body: "unused", error=echo) as srv:
        with pytest.raises(LLMUnavailable) as without:
            client(srv.base_url).run_many(HELLO)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local-server-started-with-a-key-42")
        with pytest.raises(LLMUnavailable) as with_key:
            client(srv.base_url).run_many(HELLO)
    assert f"Bearer {LOCAL_SERVER_KEY}" in str(without.value)
    assert "OPENAI_API_KEY in your environment (a server on this machine needs none unless" in str(without.value)
    # the user's own key went to the server (and is scrubbed from the message that quotes it)
    assert "Bearer [REDACTED:OPENAI_API_KEY]" in str(with_key.value) and LOCAL_SERVER_KEY not in str(with_key.value)


def test_a_remote_api_base_still_needs_a_key_and_says_how(no_key: None) -> None:
    """Refused by the SDK before anything is sent: no network is reached."""
    for url in ("http://127.0.0.1.nip.io:9/v1", "https://api.example.invalid/v1"):
        with pytest.raises(LLMUnavailable) as refused:
            client(url).run_many(HELLO)
        message = " ".join(str(refused.value).split())
        assert "Missing credentials" in message, message
        assert "OPENAI_API_KEY in your environment" in message
        assert "still needs the variable set, to any value, unless llm.api_base is on this machine" in message


def test_recipe_run_against_a_local_server_without_a_key(tmp_path: Path) -> None:
    """The real command, no *_API_KEY in its environment; the placeholder is written nowhere."""
    import shutil

    from helpers.pipeline import BASE_RECIPE, CASES, pipeline_model

    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("RECIPE_")}
    env.update(PYTHONPATH=str(ROOT), LITELLM_LOCAL_MODEL_COST_MAP="True")
    with FakeOpenAI(pipeline_model) as srv:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(BASE_RECIPE.format(base_url=srv.base_url), encoding="utf-8")
        command = [sys.executable, "-m", "engine.cli", "-q", "run", str(recipe), "--until", "answers"]
        command += ["--runs-dir", str(tmp_path / "runs")]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("complete: ") and srv.calls >= 6
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert LOCAL_SERVER_KEY.encode() not in path.read_bytes(), path
