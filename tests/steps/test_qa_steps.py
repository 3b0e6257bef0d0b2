"""Pass 1 (questions) and pass 2 (answers) end to end: real recipe, real DuckDB, real HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import engine.llm.client as llm
from engine.pipeline.runner import Paths, run_recipe
from engine.steps.answers import COLUMNS as QA_COLUMNS
from engine.steps.base import RunOptions
from engine.steps.questions import drop_reason, normalise_question
from fakes.openai_server import JUNK, FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parents[1] / "cases"
QUIET = RunOptions(quiet=True)

RECIPE = """\
name: qa-test
creator:
  name: Dr. Test
sources:
  - type: local
    path: transcripts
llm:
  model: openai/fake
  api_base: {base_url}
  max_concurrency: {concurrency}
  requests_per_minute: {rpm}
  reask: {reask}
  retries: {retries}
  timeout: {timeout}
questions:
  min_per_video: 2
  max_per_video: 4
"""


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def write_recipe(
    tmp_path: Path,
    srv: FakeOpenAI,
    concurrency: int = 4,
    rpm: float = 0,
    reask: int = 1,
    extra: str = "",
    retries: int = 5,
    timeout: float = 5,
) -> Path:
    folder = tmp_path / "transcripts"
    if not folder.exists():
        shutil.copytree(CASES / "engine_transcripts", folder)
    path = tmp_path / "recipe.yaml"
    settings = dict(concurrency=concurrency, rpm=rpm, reask=reask, retries=retries, timeout=timeout)
    path.write_text(RECIPE.format(base_url=srv.base_url, **settings) + extra)
    return path


def first_user(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def title_of(prompt: str) -> str:
    return re.search(r'titled "([^"]*)"|talk "([^"]*)"', prompt).group(0).split('"')[1]


def numbered_questions(prompt: str) -> list[tuple[int, str]]:
    block = prompt.split("Questions:\n", 1)[1].split("\n\nTranscript:", 1)[0]
    return [(int(n), q) for n, q in re.findall(r"^(\d+)\. (.*)$", block, re.M)]


def good_model(body: dict) -> str:
    """Questions: two keepers plus three the filter must drop. Answers: every number."""
    prompt = first_user(body)
    if "List the questions" in prompt:
        title = title_of(prompt)
        return json.dumps(
            {
                "questions": [
                    {"question": f"What is the main idea of {title}?", "tags": ["Basics"]},
                    {"question": f"How does {title} affect hunger", "tags": ["hunger"]},
                    {"question": "What does Dr. Test recommend for breakfast?"},
                    {"question": "What is covered in this video?"},
                    {"question": "Fasting works for most people."},
                ]
            }
        )
    answers = [{"number": n, "answer": f"**Answer** to: {q}"} for n, q in numbered_questions(prompt)]
    return "```json\n" + json.dumps({"answers": answers}) + "\n```"


def table(run_dir: Path, name: str) -> list[dict]:
    with duckdb.connect(str(run_dir / "data.duckdb"), read_only=True) as con:
        cur = con.execute(f'SELECT * FROM "{name}" ORDER BY ALL')
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def paths_in(tmp_path: Path) -> Paths:
    return Paths(runs_dir=tmp_path / "runs", store=tmp_path / "runs" / "store.duckdb")


def test_two_passes_produce_filtered_questions_and_matched_answers(tmp_path: Path) -> None:
    with FakeOpenAI(good_model, latency=0.01) as srv:
        result = run_recipe(write_recipe(tmp_path, srv), paths_in(tmp_path), until="answers", options=QUIET)
    assert result.executed == ["sources", "transcripts", "questions", "answers"]
    assert srv.calls == 6  # 3 videos x (1 questions call + 1 answers call)
    questions = table(result.run_dir, "questions")
    kept = [q for q in questions if q["status"] == "ok"]
    assert len(kept) == 6
    assert {q["question"] for q in kept} >= {"What is the main idea of insulin?", "How does insulin affect hunger?"}
    dropped = sorted({q["reason"] for q in questions if q["status"] == "dropped"})
    assert dropped == ["mentions the creator", "not a question", "refers to the video or transcript"]
    answers = table(result.run_dir, "answers")
    assert list(answers[0]) == list(QA_COLUMNS)
    assert len(answers) == 6 and all(a["status"] == "ok" for a in answers)
    for a in answers:
        assert a["answer"] == f"**Answer** to: {a['question']}"
        assert a["model"] == "openai/fake" and len(a["prompt_digest"]) == 16
    assert {tuple(a["tags"]) for a in answers} == {("basics",), ("hunger",)}
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["answers"]["llm"]["calls"] == 3 and metrics["questions"]["llm"]["tokens"] > 0


def test_missing_numbers_are_asked_again_in_a_follow_up(tmp_path: Path) -> None:
    def skips_last(body: dict) -> str:
        prompt = first_user(body)
        if "List the questions" not in prompt:
            asked = numbered_questions(prompt)
            if len(asked) == 1:  # the follow-up asks it alone: a prose reply is taken as is
                return f"1. About {asked[0][1]}"
            return json.dumps([{"number": n, "answer": f"About {q}"} for n, q in asked[:-1]])
        return good_model(body)

    with FakeOpenAI(skips_last) as srv:
        result = run_recipe(write_recipe(tmp_path, srv), paths_in(tmp_path), until="answers", options=QUIET)
    followups = [
        numbered_questions(first_user(b))
        for b in srv.requests
        if "List the questions" not in first_user(b) and len(numbered_questions(first_user(b))) == 1
    ]
    assert len(followups) == 3 and all(f[0][1].startswith("How does") for f in followups)
    answers = table(result.run_dir, "answers")
    assert all(a["status"] == "ok" and a["answer"] == f"About {a['question']}" for a in answers)


def test_unanswerable_and_invalid_items_are_failed_rows_with_reasons(tmp_path: Path) -> None:
    def broken(body: dict) -> str:
        prompt = first_user(body)
        if "List the questions" in prompt:
            # one video never yields valid JSON: its chunk becomes a failed row
            return "Sorry, I can't." if title_of(prompt) == "insulin" else good_model(body)
        # the "How does ..." question is never answered, however often it is asked
        return json.dumps(
            [{"number": n, "answer": "Only this one."} for n, q in numbered_questions(prompt) if q.startswith("What")]
        )

    with FakeOpenAI(broken) as srv:
        result = run_recipe(write_recipe(tmp_path, srv, reask=1), paths_in(tmp_path), until="answers", options=QUIET)
    questions = table(result.run_dir, "questions")
    failed = [q for q in questions if q["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["video_id"] == "insulin"
    assert failed[0]["reason"] == "invalid JSON after 2 attempt(s): the reply contains no parsable JSON"
    answers = table(result.run_dir, "answers")
    assert sorted(a["status"] for a in answers) == ["failed", "failed", "ok", "ok"]
    reasons = {a["reason"] for a in answers if a["status"] == "failed"}
    # the follow-up asked it alone, as number 1; its reply was an empty JSON list
    assert reasons == {"unanswered after follow-ups: invalid reply after 2 attempt(s): [] should be non-empty"}


def test_killed_run_resumes_without_repeating_a_request(tmp_path: Path) -> None:
    # 60/min spaces calls 1 s apart, so the kill lands between calls, never inside one
    with FakeOpenAI(good_model) as srv:
        recipe = write_recipe(tmp_path, srv, concurrency=1, rpm=60)
        paths = paths_in(tmp_path)
        proc = _subprocess_run(recipe, paths)
        deadline = time.monotonic() + 60
        while srv.calls < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(0.3)  # past the response and its cache commit, before the next slot
        assert srv.calls == 2 and srv.in_flight == 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        result = run_recipe(recipe, paths, until="answers", options=QUIET)
    bodies = [json.dumps(b["messages"], sort_keys=True) for b in srv.requests]
    assert len(bodies) == len(set(bodies)) == 6, "a request was sent twice"
    assert result.executed == ["questions", "answers"]
    assert len([a for a in table(result.run_dir, "answers") if a["status"] == "ok"]) == 6


def _subprocess_run(recipe: Path, paths: Paths) -> subprocess.Popen:
    code = (
        "import sys; from pathlib import Path; from engine.pipeline.runner import Paths, run_recipe;"
        "from engine.steps.base import RunOptions; run_recipe(sys.argv[1], Paths(Path(sys.argv[2]),"
        " Path(sys.argv[3])), until='answers', options=RunOptions(quiet=True))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, str(recipe), str(paths.runs_dir), str(paths.store)], env=env, cwd=ROOT
    )


def test_second_run_makes_no_calls(tmp_path: Path) -> None:
    with FakeOpenAI(good_model) as srv:
        recipe = write_recipe(tmp_path, srv)
        run_recipe(recipe, paths_in(tmp_path), until="answers", options=QUIET)
        calls = srv.calls
        again = run_recipe(recipe, paths_in(tmp_path), until="answers", options=QUIET)
    assert again.executed == [] and srv.calls == calls


def test_standalone_check_drops_what_the_model_rejects(tmp_path: Path) -> None:
    def judge(body: dict) -> str:
        prompt = first_user(body)
        if prompt.startswith("Does this question make sense"):
            return json.dumps({"standalone": "main idea" not in prompt})
        return good_model(body)

    extra = "  tags: false\n  standalone_check: true\n"
    with FakeOpenAI(judge) as srv:
        result = run_recipe(
            write_recipe(tmp_path, srv, extra=extra), paths_in(tmp_path), until="questions", options=QUIET
        )
    questions = table(result.run_dir, "questions")
    rejected = [q for q in questions if q["reason"] == "not standalone (LLM check)"]
    assert len(rejected) == 3 and all("main idea" in q["question"] for q in rejected)
    kept = [q for q in questions if q["status"] == "ok"]
    assert len(kept) == 3 and all(q["tags"] == [] for q in kept)


@pytest.mark.parametrize(
    "question,reason",
    [
        ("What does Dr. Test recommend?", "mentions the creator"),
        ("Why does Test skip breakfast?", "mentions the creator"),
        ("What is said in the transcript about sleep?", "refers to the video or transcript"),
        ("What is this talk about?", "refers to the video or transcript"),
        ("Fasting is good for you.", "not a question"),
        ("Why?", "too short to be a question"),
        ("Why do we get hungry at noon?", None),
        ("Is testing your glucose useful?", None),  # "testing" is not the name "Test"
    ],
)
def test_deterministic_filter(question: str, reason: str | None) -> None:
    assert drop_reason(question, "Dr. Test", True) == reason


def test_normalise_question() -> None:
    assert normalise_question('  1. "How does insulin work"  ') == "How does insulin work?"
    assert normalise_question("Q3: Why fast?") == "Why fast?"
    assert normalise_question("Fasting is good.") == "Fasting is good."


def test_a_single_question_prose_reply_is_kept_whole() -> None:
    from engine.steps.answers import read_single_answer

    text = "Why does it happen? Because:\n- insulin rises\n- fat is stored"
    assert read_single_answer(text, "Why do we gain weight?") == ([{"number": 1, "answer": text}], None)


# -- an invalid reply is never kept; failed items are retried --------------------------------


def one_question_per_chunk(recipe: Path) -> Path:
    text = recipe.read_text().replace("min_per_video: 2\n  max_per_video: 4", "min_per_video: 1\n  max_per_video: 1")
    recipe.write_text(text)
    return recipe


def answers_bodies(srv: FakeOpenAI) -> list[str]:
    return [json.dumps(b["messages"]) for b in srv.requests if "List the questions" not in first_user(b)]


def test_junk_answer_to_a_single_question_is_a_failed_row_until_retry_failed(tmp_path: Path) -> None:
    """The issue's case: one question per chunk, the model answers `not json {{{ [`."""
    from click.testing import CliRunner

    from engine.cli import main

    healthy = {"on": False}

    def model(body: dict) -> str:
        asked = "List the questions" in first_user(body)
        return good_model(body) if asked or healthy["on"] else JUNK

    paths = paths_in(tmp_path)
    with FakeOpenAI(model) as srv:
        recipe = one_question_per_chunk(write_recipe(tmp_path, srv, reask=1))
        first = run_recipe(recipe, paths, until="answers", options=QUIET)
        answers = table(first.run_dir, "answers")
        assert len(answers) == 3 and {a["status"] for a in answers} == {"failed"}
        assert all(a["answer"] is None and "unbalanced braces" in a["reason"] for a in answers)
        assert first.failed == {"answers": 3}

        calls = srv.calls  # a plain rerun keeps the table, and says how to retry
        plain = CliRunner().invoke(
            main,
            ["--quiet", "run", str(recipe), "--until", "answers", "--store", str(paths.store)]
            + ["--runs-dir", str(paths.runs_dir)],
            catch_exceptions=False,
        )
        assert plain.exit_code == 0 and srv.calls == calls
        assert "LLM items" in " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
        retry = f"recipe run {recipe} --until answers --store {paths.store} --runs-dir {paths.runs_dir} --retry-failed"
        assert f"3 failed item(s) (answers 3); retry them with: {retry}" in plain.output

        healthy["on"] = True
        retried = run_recipe(recipe, paths, until="answers", options=RunOptions(quiet=True, retry_failed=True))
        assert retried.executed == ["answers"] and srv.calls == calls + 3  # one call per failed item
        assert retried.failed == {} and retried.failed_summary() is None
        answers = table(retried.run_dir, "answers")
        assert all(a["status"] == "ok" and a["answer"] == f"**Answer** to: {a['question']}" for a in answers)
        assert run_recipe(recipe, paths, until="answers", options=QUIET).executed == []


def test_retry_failed_asks_failed_chunks_again_and_nothing_that_succeeded(tmp_path: Path) -> None:
    broken = {"on": True}

    def model(body: dict) -> str:
        prompt = first_user(body)
        if broken["on"] and "List the questions" in prompt and title_of(prompt) == "insulin":
            return JUNK
        return good_model(body)

    paths = paths_in(tmp_path)
    with FakeOpenAI(model) as srv:
        recipe = write_recipe(tmp_path, srv, reask=1)
        first = run_recipe(recipe, paths, until="answers", options=QUIET)
        assert first.failed == {"questions": 1}
        before = answers_bodies(srv)
        questions_asked = len(srv.requests) - len(before)  # the insulin chunk: asked, then re-asked once
        assert run_recipe(recipe, paths, until="answers", options=QUIET).executed == []  # plain: cached
        assert _planned(recipe, paths)["questions"] == "cached, 1 failed (--retry-failed asks them again)"
        assert _planned(recipe, paths, "--retry-failed")["questions"] == "to run (asks 1 failed again)"
        assert _planned(recipe, paths, "--retry-failed")["answers"] == "cached"  # until questions changes
        still = run_recipe(recipe, paths, until="answers", options=RunOptions(quiet=True, retry_failed=True))
        # asked again, failed again: the questions table is unchanged, so answers stays cached
        assert still.executed == ["questions"] and still.failed == {"questions": 1}
        questions_asked += 1

        broken["on"] = False
        retried = run_recipe(recipe, paths, until="answers", options=RunOptions(quiet=True, retry_failed=True))
    assert retried.executed == ["questions", "answers"] and retried.failed == {}
    new = srv.requests[questions_asked + len(before) :]
    assert [title_of(first_user(b)) for b in new if "List the questions" in first_user(b)] == ["insulin"]
    new_answers = [b for b in new if "List the questions" not in first_user(b)]
    assert len(new_answers) == 1 and "insulin" in first_user(new_answers[0])  # only the new questions
    assert not set(answers_bodies(srv)[len(before) :]) & set(before), "an answered group was asked again"
    assert len([a for a in table(retried.run_dir, "answers") if a["status"] == "ok"]) == 6


def _planned(recipe: Path, paths: Paths, *flags: str) -> dict[str, str]:
    """`recipe plan` as printed: step -> status."""
    from click.testing import CliRunner

    from engine.cli import main

    args = ["plan", str(recipe), "--until", "answers", "--store", str(paths.store), "--runs-dir", str(paths.runs_dir)]
    printed = CliRunner().invoke(main, [*args, *flags], catch_exceptions=False)
    assert printed.exit_code == 0, printed.output
    steps = [line.split(None, 2) for line in printed.output.splitlines() if not line.startswith("run ")]
    return {name: status for name, _key, status in steps}


def many_transcripts(tmp_path: Path, n: int) -> None:
    folder = tmp_path / "transcripts"
    folder.mkdir()
    for i in range(n):
        (folder / f"talk{i:02d}.txt").write_text(
            f"Talk {i}. Fasting for {i + 12} hours lowers insulin, and lower insulin lets the body burn fat.\n",
            encoding="utf-8",
        )


def test_twenty_percent_faults_complete_and_no_invalid_reply_is_stored_as_valid(tmp_path: Path) -> None:
    """Done-when of issue 12: 429, 500, hangs past the timeout, garbage bodies and junk replies."""
    from click.testing import CliRunner

    from engine.cli import main

    many_transcripts(tmp_path, 12)
    faults = {"429": 0.05, "500": 0.04, "timeout": 0.03, "garbage": 0.04, "junk": 0.04}
    paths = paths_in(tmp_path)
    with FakeOpenAI(good_model, faults=faults, seed=12, timeout_sleep=2.5) as srv:
        recipe = write_recipe(tmp_path, srv, concurrency=6, reask=2, retries=6, timeout=1)
        ran = CliRunner().invoke(
            main,
            ["--quiet", "run", str(recipe), "--until", "answers", "--store", str(paths.store)]
            + ["--runs-dir", str(paths.runs_dir)],
            catch_exceptions=False,
        )
    assert ran.exit_code == 0 and "complete: " in ran.output, ran.output
    assert set(srv.faults_injected) == set(faults), srv.faults_injected  # every kind really happened
    run_dir = next(paths.runs_dir.glob("*/manifest.json")).parent
    questions = [q for q in table(run_dir, "questions") if q["status"] == "ok"]
    answers = [a for a in table(run_dir, "answers") if a["status"] == "ok"]
    assert len(questions) >= 20 and len(answers) >= 20
    assert all(
        re.fullmatch(r"What is the main idea of talk\d\d\?|How does talk\d\d affect hunger\?", q["question"])
        for q in questions
    )
    assert all(a["answer"] == f"**Answer** to: {a['question']}" for a in answers)  # exactly the healthy reply
    with duckdb.connect(str(paths.store), read_only=True) as con:
        cached = [json.loads(v) for (v,) in con.execute("SELECT value FROM _cache_llm").fetchall()]
    assert cached and all(isinstance(c["valid"], bool) for c in cached)
    assert all(not c["valid"] for c in cached if c["text"] == JUNK)
    assert sum(c["text"] == JUNK for c in cached) >= 1  # junk did reach the cache, marked invalid


def _questions_started(paths: Paths) -> bool:
    return any("questions: running" in log.read_text() for log in paths.runs_dir.glob("*/run.log"))


@pytest.mark.parametrize("moment", ["as the LLM step starts", "with calls in flight"])
def test_ctrl_c_during_llm_calls_exits_at_once_and_keeps_finished_calls(tmp_path: Path, moment: str) -> None:
    """Issue 12 item 6: SIGINT took 6.7-8.6 s and warned "coroutine ... was never awaited"."""
    slow = {"on": True}

    def model(body: dict) -> str:
        prompt = first_user(body)
        if slow["on"] and "List the questions" in prompt and title_of(prompt) != "insulin":
            time.sleep(20)  # two calls hang at the server; the insulin one is answered
        return good_model(body)

    paths = paths_in(tmp_path)
    with FakeOpenAI(model) as srv:
        recipe = write_recipe(tmp_path, srv, concurrency=3)
        command = [sys.executable, "-m", "engine.cli", "--quiet", "run", str(recipe), "--until", "answers"]
        command += ["--store", str(paths.store), "--runs-dir", str(paths.runs_dir)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        if moment == "as the LLM step starts":  # litellm loading, or the first calls going out
            while not _questions_started(paths) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
        else:
            while not (srv.calls == 3 and srv.in_flight == 2) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(0.5)  # the insulin reply is in and committed; two calls are in flight
            assert srv.calls == 3 and srv.in_flight == 2
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        seconds = time.monotonic() - interrupted
        print(f"{moment}: exit {proc.returncode} {seconds:.2f} s after SIGINT")  # reported, see pytest -s
        assert proc.returncode == 130 and "interrupted; finished steps are kept" in stderr, (proc.returncode, stderr)
        assert seconds < 5, f"took {seconds:.1f} s to stop"
        assert "never awaited" not in stderr and "Traceback" not in stderr, stderr
        # what was committed before the signal (by a loaded machine, the insulin reply may be in
        # even at the first moment); only the questions step had started, so these are its calls
        with duckdb.connect(str(paths.store), read_only=True) as con:
            made = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_cache_llm'").fetchone()[0]
            finished = con.execute("SELECT count(*) FROM _cache_llm").fetchone()[0] if made else 0
        assert finished <= 1

        slow["on"] = False
        sent_before = srv.calls
        result = run_recipe(recipe, paths, until="answers", options=QUIET)
    asked = [json.dumps(b["messages"]) for b in srv.requests if "List the questions" in first_user(b)]
    assert len(set(asked)) == 3 and len(asked) == sent_before + 3 - finished  # no finished call repeated
    assert result.executed == ["questions", "answers"]
    assert len([a for a in table(result.run_dir, "answers") if a["status"] == "ok"]) == 6


def test_questions_per_call_splits_a_chunks_questions_over_calls(tmp_path: Path) -> None:
    """`answers.questions_per_call: 1`: one call per question, each with the chunk's text; the
    rows are the same as when a chunk's questions go out together."""
    with FakeOpenAI(good_model, latency=0.01) as srv:
        recipe = write_recipe(tmp_path, srv, extra="answers:\n  questions_per_call: 1\n")
        result = run_recipe(recipe, paths_in(tmp_path), until="answers", options=QUIET)
    asked = [numbered_questions(first_user(b)) for b in srv.requests if "List the questions" not in first_user(b)]
    assert len(asked) == 6 and all(len(a) == 1 for a in asked)  # 3 chunks x 2 kept questions
    answers = table(result.run_dir, "answers")
    assert len(answers) == 6 and all(a["status"] == "ok" for a in answers)
    assert all(a["answer"] == f"**Answer** to: {a['question']}" for a in answers)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["answers"]["llm"]["calls"] == 6 and "followups" not in metrics["answers"]


def test_questions_per_call_below_one_is_refused_with_the_field(tmp_path: Path) -> None:
    with FakeOpenAI(good_model) as srv:
        recipe = write_recipe(tmp_path, srv, extra="answers:\n  questions_per_call: 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(recipe)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 1
    assert "answers.questions_per_call" in done.stdout + done.stderr
