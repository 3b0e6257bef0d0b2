"""Secrets never reach a file, a table or the console (issue 12, item 5).

End to end: the real `recipe` command in its own process, against the fake OpenAI server that
echoes the Authorization header in its error bodies as real providers do; then every file under
the project (run folder, store, artifacts) and every row of every DuckDB table are searched for
the key. Plus the scrubber itself on real-shaped provider and library messages.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from engine.errors import CallFailed, FetchFailed, LLMUnavailable, Problem, RecipeInvalid, StepFailed
from engine.pipeline.logs import LOGGER, run_log, setup_console
from engine.redact import redact, redact_row, secret_values
from fakes.openai_server import ErrorReply, FakeOpenAI, last_user_message

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases"

# -- the scrubber ----------------------------------------------------------------------------

ENV = {
    "OPENAI_API_KEY": "sk-proj-Q2xv8KdA0mZrT7wE4bYc1nLs",
    "ANTHROPIC_API_KEY": "sk-ant-api03-7hJk2LmN9pQr4StU",
    "AZURE_API_KEY": "0f3b9c2d7e8a41f6b5c4d3e2a1908f7e",
    "HF_TOKEN": "hf_zYxWvUtSrQpOnMlKjIhGfEdCbA9876543",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "WATSONX_APIKEY": "watson-4a5b6c7d8e9f",
    "DB_PASSWORD": "correct horse battery",
    "SHORT_TOKEN": "abc123",  # too short to scrub without mangling text
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/someone-with-a-long-name",
}


def test_every_credential_variable_is_replaced_by_its_name() -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        text = f"provider said: {ENV[name]} is not valid"
        assert redact(text, ENV) == f"provider said: [REDACTED:{name}] is not valid"
    assert redact("id AKIAIOSFODNN7EXAMPLE; watson-4a5b6c7d8e9f", ENV) == (
        "id [REDACTED:AWS_ACCESS_KEY_ID]; [REDACTED:WATSONX_APIKEY]"
    )
    assert redact("login with correct horse battery failed", ENV) == "login with [REDACTED:DB_PASSWORD] failed"
    # short values and ordinary variables are left alone, so ordinary text is not mangled
    plain = "abc123 in /usr/local/bin:/usr/bin:/bin under /home/someone-with-a-long-name"
    assert redact(plain, ENV) == plain
    assert {name for _, name in secret_values(ENV)} == set(ENV) - {"SHORT_TOKEN", "PATH", "HOME"}


def test_a_key_set_after_start_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "zz-" + secrets.token_hex(12)  # no known shape: only the variable can catch it
    assert redact(f"echo {key}") == f"echo {key}"
    monkeypatch.setenv("MISTRAL_API_KEY", key)
    assert redact(f"echo {key}") == "echo [REDACTED:MISTRAL_API_KEY]"


# Messages as providers, SDKs and HTTP libraries print them, each with the secret it must lose.
LEAKY = [
    (
        "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API key "
        "provided: Bearer sk-live-8sKd02LxQpVn3mZt. You can find your API key at https://platform.openai.com",
        "sk-live-8sKd02LxQpVn3mZt",
    ),
    ("Error code: 401 - {'message': 'invalid x-api-key', 'x-api-key': 'ant-9Xk2pQ7LmZ0a'}", "ant-9Xk2pQ7LmZ0a"),
    ("headers: {'api-key': '5e4f3a2b1c0d9e8f', 'Content-Type': 'application/json'}", "5e4f3a2b1c0d9e8f"),
    ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("Cannot connect to http://alice:s3cr3t-pass@llm.internal:8000/v1/chat/completions", "s3cr3t-pass"),
    ("POST https://ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@example.com/x", "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("GET https://generativelanguage.googleapis.com/v1/models?key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "AIzaSy"),
    ("HTTP 403 for https://api.example.com/v1/chat?api_key=abc123XYZ789&model=x", "abc123XYZ789"),
    ("https://proxy.example.com/v1?access_token=ya29.a0AfH6SMBx", "ya29.a0AfH6SMBx"),
    ("OpenAI(api_key='sk-0123456789abcdefghijKLMN', base_url=None)", "sk-0123456789abcdefghijKLMN"),
    ("token hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 rejected", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("slack said: xoxb-123456789012-abcdefghijkl", "xoxb-123456789012-abcdefghijkl"),
    ('{"password": "hunter2hunter2", "user": "bob"}', "hunter2hunter2"),
]


@pytest.mark.parametrize("message,secret", LEAKY)
def test_known_shapes_urls_and_fields_are_scrubbed(message: str, secret: str) -> None:
    scrubbed = redact(message, {})
    assert secret not in scrubbed and "REDACTED" in scrubbed
    assert redact(scrubbed, {}) == scrubbed  # idempotent: scrubbing twice changes nothing


# Text that looks a little like a secret and must come through untouched.
INNOCENT = [
    "task-management-system-for-everyone and risk-adjusted-return-figures",
    "Bearer authentication failed; token counting unavailable; password: too short",
    "max_tokens=4096 prompt_tokens: 12 completion_tokens=800",
    "step 'questions' (3f2a9c1b2e4d5f60) failed: KeyError: 'key'",
    "write alice@example.com or see https://example.com/a?b=c&page=2#key=frag",
    "C:\\Users\\bob\\AppData\\Local\\Temp\\sk-file.txt",
    "https://[::1]:8080/v1 and http://localhost:11434/v1",
    "chunk 3 of 'Fasting basics' is 8,192 tokens; the key insight is insulin",
]


@pytest.mark.parametrize("text", INNOCENT)
def test_ordinary_text_is_not_mangled(text: str) -> None:
    assert redact(text, {}) == text


def test_only_message_columns_of_a_row_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    row = {"question": f"what is {key}?", "reason": f"HTTP 500: Bearer {key}", "error": None, "n": 3}
    assert redact_row(row) == {**row, "reason": "HTTP 500: Bearer [REDACTED:OPENAI_API_KEY]"}
    clean = {"question": "q", "reason": None}
    assert redact_row(clean) is clean


# -- the choke points ------------------------------------------------------------------------


def test_json_files_a_run_writes_are_scrubbed_string_by_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.json and manifest.json carry library messages (a step's reason, an export error)."""
    from engine.pipeline.run_folder import write_json

    key = "sk-proj-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    metrics = {"export": {"reason": f"401: Incorrect API key provided: {key}"}, "tries": [f'"{key}"', 3]}
    write_json(tmp_path / "metrics.json", metrics)
    text = (tmp_path / "metrics.json").read_text()
    assert key not in text and key[8:] not in text
    assert json.loads(text)["export"]["reason"] == "401: Incorrect API key provided: [REDACTED:OPENAI_API_KEY]"
    assert json.loads(text)["tries"] == ['"[REDACTED:OPENAI_API_KEY]"', 3]


def test_litellms_own_log_handlers_scrub_too(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    from engine.llm.providers import load_litellm

    load_litellm()
    handlers = [h for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy") for h in logging.getLogger(name).handlers]
    assert handlers, "litellm no longer installs handlers of its own; drop this test"
    key = secrets.token_hex(20)  # no sk- prefix: litellm's own filter only knows key shapes
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    logging.getLogger("LiteLLM").error("upstream said: bad key %s", key)
    captured = capfd.readouterr()
    assert key not in captured.err + captured.out
    assert "[REDACTED:ANTHROPIC_API_KEY]" in captured.err + captured.out


def test_our_exceptions_scrub_their_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    raw = RuntimeError(f"Incorrect API key provided: Bearer {key}")  # a library's, not ours
    errors = [
        StepFailed("questions", "ab" * 32, raw, "recipe.yaml", "3f2a9c0d1e2b"),
        CallFailed(f"gave up after 3 attempt(s): {raw}"),
        LLMUnavailable(f"openai/x: refused ({raw})"),
        FetchFailed("http error", f"GET https://www.youtube.com/api?key={key}", permanent=False),
        RecipeInvalid([Problem("r.yaml", 3, 5, "llm.api_base", f"credentials in http://u:{key}@h/v1")]),
    ]
    for error in errors:
        assert key not in str(error) and key not in repr(error), type(error).__name__
    assert "[REDACTED:OPENAI_API_KEY]" in str(errors[0]) and key not in errors[3].reason  # type: ignore[attr-defined]


def test_run_log_and_console_scrub_messages_arguments_and_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    setup_console(debug=False, quiet=False)
    log = logging.getLogger(f"{LOGGER}.steps.questions")  # a child: the handlers must catch it
    with run_log(tmp_path / "run.log"):
        log.warning("questions failed for %s: %s", "v1", f"Bearer {key}")
        log.debug("raw %r", {"headers": {"Authorization": f"Bearer {key}"}})
        try:
            raise ConnectionError(f"upstream echoed {key}")
        except ConnectionError:
            log.exception("call failed")
    written = (tmp_path / "run.log").read_text(encoding="utf-8")
    console = capsys.readouterr().err
    assert key not in written and key not in console
    assert written.count("[REDACTED:OPENAI_API_KEY]") == 3 and "Traceback" in written
    assert "questions failed for v1: Bearer [REDACTED:OPENAI_API_KEY]" in " ".join(console.split())


def test_the_error_edge_scrubs_what_it_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.inspect.runs
    from engine.cli import main

    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def broken(runs_dir: Path) -> list:
        raise OSError(f"proxy said 407 for http://bob:{key}@proxy:3128")  # not ours: not scrubbed at birth

    monkeypatch.setattr(engine.inspect.runs, "list_runs", broken)
    result = CliRunner().invoke(main, ["runs", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1 and key not in result.output
    assert "error: OSError: proxy said 407 for http://bob:[REDACTED:OPENAI_API_KEY]@proxy:3128" in result.output


# -- end to end --------------------------------------------------------------------------------

RECIPE = """name: secrets
creator: {{name: Dr. Test}}
sources: [{{type: local, path: transcripts}}]
llm: {{model: openai/fake, api_base: "{base_url}", reask: 0, retries: 1, timeout: 10}}
"""


def questions(body: dict) -> str:
    return '{"questions": [{"question": "Why does the body keep its own schedule?", "tags": ["x"]}]}'


def project(tmp_path: Path, srv: FakeOpenAI) -> Path:
    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(base_url=srv.base_url), encoding="utf-8")
    return recipe


def recipe_run(recipe: Path, key: str, *extra: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    """`recipe run` in its own process, as a user runs it, with the key in its environment."""
    env = {n: v for n, v in os.environ.items() if not n.startswith("RECIPE_")}
    env.update(PYTHONPATH=str(ROOT), OPENAI_API_KEY=key, LITELLM_LOCAL_MODEL_COST_MAP="True")
    if debug:
        env["RECIPE_DEBUG"] = "1"
    runs = recipe.parent / "runs"
    command = [sys.executable, "-m", "engine.cli", "run", str(recipe), "--runs-dir", str(runs), "--until", "questions"]
    command += ["--store", str(runs / "store.duckdb"), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=recipe.parent, timeout=300, check=False)


def leaks(key: str, root: Path, output: str) -> list[str]:
    """Where the key (or either half of its random part, as a cut message would hold it) is found:
    the command's output, the bytes of every file under root, and every row of every DuckDB table
    (DuckDB may compress strings on disk, so its bytes alone prove nothing)."""
    random_part = key.removeprefix("sk-test-")
    needles = (key, random_part[:12], random_part[-12:])
    found = ["console"] if any(n in output for n in needles) else []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n.encode() in data for n in needles):
            found.append(str(path.relative_to(root)))
        if path.suffix == ".duckdb":
            found += [f"{path.name}:{table}" for table, text in table_texts(path) if any(n in text for n in needles)]
    return found


def table_texts(db: Path) -> list[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        return [(t, repr(con.execute(f'SELECT * FROM "{s}"."{t}"').fetchall())) for s, t in tables]


def new_key() -> str:
    return "sk-test-" + secrets.token_hex(20)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_401_that_echoes_the_key_leaves_it_nowhere(tmp_path: Path, debug: bool) -> None:
    key = new_key()
    echo = ErrorReply(401, "Incorrect API key provided: {authorization}", code="invalid_api_key")
    with FakeOpenAI(questions, error=echo) as srv:
        result = recipe_run(project(tmp_path, srv), key, debug=debug)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert srv.calls >= 1  # the key did reach the provider, and came back in its reply
    assert leaks(key, tmp_path, output) == []
    manifest = next((tmp_path / "runs").glob("*/manifest.json")).read_text(encoding="utf-8")
    assert "Incorrect API key provided: Bearer [REDACTED:OPENAI_API_KEY]" in manifest
    if debug:  # the traceback comes through, scrubbed, chained provider errors included
        assert "Traceback (most recent call last)" in result.stderr and "AuthenticationError" in result.stderr
    else:
        assert "Bearer [REDACTED:OPENAI_API_KEY]" in output and "Traceback" not in output


def test_a_500_that_echoes_the_key_is_retried_and_recorded_per_item_without_it(tmp_path: Path) -> None:
    key = new_key()

    def insulin(body: dict) -> bool:
        title = re.search(r'titled "([^"]*)"', last_user_message(body))
        return bool(title) and "insulin" in title.group(1).lower()  # type: ignore[union-attr]

    echo = ErrorReply(500, "upstream failed; request headers: Authorization: {authorization}", when=insulin)
    with FakeOpenAI(questions, error=echo) as srv:
        result = recipe_run(project(tmp_path, srv), key)
        failing = sum(1 for body in srv.requests if insulin(body))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert failing == 2  # transient: asked again once (retries: 1), then recorded
    assert leaks(key, tmp_path, output) == []
    store = tmp_path / "runs" / "store.duckdb"
    with duckdb.connect(str(store), read_only=True) as con:
        table = con.execute("SELECT table_name FROM _catalog WHERE step = 'questions'").fetchone()[0]  # type: ignore[index]
        failed = con.execute(f"SELECT title, reason FROM \"{table}\" WHERE status = 'failed'").fetchall()
    assert len(failed) == 1 and "insulin" in failed[0][0].lower()
    assert failed[0][1].startswith("gave up after 2 attempt(s)")
    assert "Authorization: Bearer [REDACTED:OPENAI_API_KEY]" in failed[0][1]
