"""`type: dataset` sources: every format through DuckDB, globs, chat shapes, column maps, filters,
clear errors, content keys. Real files, real DuckDB, the real pipeline up to `sources`/`answers`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from engine.errors import DatasetUnreadable, RecipeError, RecipeInvalid
from engine.pipeline.runner import Paths, RunResult, run_recipe
from engine.sources.dataset import read_table
from engine.steps.base import RunOptions

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parents[1] / "cases"
QUIET = RunOptions(quiet=True)

# Real-shaped rows: markdown answers, a numeric group, unicode, a question with no '?'.
ROWS = [
    {
        "question": "Why do I wake at 3 am?",
        "answer": "**Blood sugar dips** and alcohol wearing off are common causes.\n\n- keep the room cool\n- no clock",
        "video_id": "sleep01",
        "title": "Sleep, Part 1",
        "tags": ["sleep", "Night"],
    },
    {
        "question": "Is café au lait OK while fasting",
        "answer": "A splash of milk is fine for most people — a large latte is a meal.",
        "video_id": "fast02",
        "title": "Fasting FAQ",
        "tags": ["fasting"],
    },
    {
        "question": "How much salt is too much?",
        "answer": "Most salt hides in bread, sauces and ready meals, not the shaker.",
        "video_id": "fast02",
        "title": "Fasting FAQ",
        "tags": [],
    },
]


def recipe_text(sources: str) -> str:
    return f"name: ds-test\ncreator: {{name: Dr. Test}}\nsources:\n{sources}\nllm: {{model: openai/fake}}\n"


def write(tmp_path: Path, sources: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text(sources), encoding="utf-8")
    return path


def paths_in(tmp_path: Path) -> Paths:
    return Paths(runs_dir=tmp_path / "runs", store=tmp_path / "runs" / "store.duckdb")


def run(recipe: Path, tmp_path: Path, until: str = "sources") -> RunResult:
    return run_recipe(recipe, paths_in(tmp_path), until=until, options=QUIET)


def table(result: RunResult, name: str) -> list[dict]:
    with duckdb.connect(str(result.run_dir / "data.duckdb"), read_only=True) as con:
        cur = con.execute(f'SELECT * FROM "{name}"')
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def dataset_rows(result: RunResult) -> list[dict]:
    return [r for r in table(result, "sources") if r["source"] == "dataset"]


def by_question(rows: list[dict]) -> dict[str, dict]:
    return {r["question"]: r for r in rows}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_format(folder: Path, fmt: str, rows: list[dict]) -> Path:
    """The same rows as one file of `fmt`; CSV and Parquet are written by DuckDB itself."""
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = write_jsonl(folder / "staging.jsonl", rows)
    if fmt == "jsonl":
        return jsonl.rename(folder / "qa.jsonl")
    if fmt == "json":
        target = folder / "qa.json"
        target.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    else:
        target = folder / f"qa.{fmt}"
        with duckdb.connect() as con:
            source = f"read_json_auto('{jsonl}', format='newline_delimited')"
            if fmt == "csv":  # tags as text, as a spreadsheet export has them
                con.execute(
                    f"COPY (SELECT question, answer, video_id, title, array_to_string(tags, ', ') AS tags "
                    f"FROM {source}) TO '{target}' (HEADER, DELIMITER ',')"
                )
            else:
                con.execute(f"COPY (SELECT * FROM {source}) TO '{target}' (FORMAT parquet)")
    jsonl.unlink()
    return target


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_each_format_gives_the_same_rows(tmp_path: Path, fmt: str) -> None:
    write_format(tmp_path / "data", fmt, ROWS)
    result = run(write(tmp_path, f"  - {{type: dataset, path: data/qa.{fmt}}}"), tmp_path)
    rows = by_question(dataset_rows(result))
    assert set(rows) == {r["question"] for r in ROWS}
    first = rows["Why do I wake at 3 am?"]
    assert first["answer"] == ROWS[0]["answer"]  # markdown and newlines survive every format
    assert (first["video_id"], first["title"], first["tags"]) == ("sleep01", "Sleep, Part 1", ["sleep", "night"])
    assert first["path"] == f"data/qa.{fmt}" and first["format"] == fmt and first["status"] == "ok"
    assert rows["Is café au lait OK while fasting"]["video_id"] == "fast02"
    assert rows["How much salt is too much?"]["tags"] == []
    ids = [r["id"] for r in rows.values()]
    assert len(set(ids)) == 3 and all(len(i) == 16 for i in ids)


def test_explicit_format_reads_a_file_whose_extension_says_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "export.data", ROWS)
    with pytest.raises(RecipeInvalid) as caught:
        run(write(tmp_path, "  - {type: dataset, path: export.data}"), tmp_path)
    assert "sources[0].format: export.data: unknown data format (.data)" in str(caught.value)
    result = run(write(tmp_path, "  - {type: dataset, path: export.data, format: jsonl}"), tmp_path)
    assert len(dataset_rows(result)) == 3


def test_a_glob_reads_every_matching_file_and_a_folder_its_data_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "part-000.jsonl", ROWS[:2])
    write_format(tmp_path / "data" / "more", "parquet", ROWS[2:])
    shutil.move(tmp_path / "data" / "more" / "qa.parquet", tmp_path / "data" / "part-001.parquet")
    (tmp_path / "data" / "notes.txt").write_text("not data")
    result = run(write(tmp_path, "  - {type: dataset, path: 'data/part-*'}"), tmp_path)
    rows = dataset_rows(result)
    assert sorted(r["path"] for r in rows) == ["data/part-000.jsonl"] * 2 + ["data/part-001.parquet"]
    result = run(write(tmp_path, "  - {type: dataset, path: data}"), tmp_path)
    assert len(dataset_rows(result)) == 3  # notes.txt is no data file; the subfolder is not read


def test_openai_chat_rows_take_the_first_exchange_and_keep_the_system_turn(tmp_path: Path) -> None:
    conversations = [
        {
            "messages": [
                {"role": "system", "content": "You are Dr. Test."},
                {"role": "user", "content": "Is fruit juice healthy?"},
                {"role": "assistant", "content": "Not really: juicing strips the **fiber** and keeps the sugar."},
                {"role": "user", "content": "And smoothies?"},
                {"role": "assistant", "content": "Better, since the fiber stays."},
            ],
            "video_id": "sugar",
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is box breathing?"}]},
                {"role": "assistant", "content": "Four counts in, hold four, out four, hold four."},
            ]
        },
        {"messages": [{"role": "user", "content": "Anyone there?"}]},
        {"messages": [{"role": "assistant", "content": "An answer nobody asked for."}]},
        {"messages": []},
        {"messages": None},
    ]
    write_jsonl(tmp_path / "chat.jsonl", conversations)
    result = run(write(tmp_path, "  - {type: dataset, path: chat.jsonl, messages: messages}"), tmp_path)
    rows = dataset_rows(result)
    ok = by_question([r for r in rows if r["status"] == "ok"])
    juice = ok["Is fruit juice healthy?"]
    assert juice["answer"] == "Not really: juicing strips the **fiber** and keeps the sugar."
    assert juice["system"] == "You are Dr. Test." and juice["video_id"] == "sugar"
    box = ok["What is box breathing?"]
    assert box["video_id"] == box["id"]  # no group: the row is its own group
    dropped = sorted(r["reason"] for r in rows if r["status"] == "dropped")
    assert dropped == [
        "no assistant turn after the first user turn (row 3 of chat.jsonl)",
        "no conversation (row 5 of chat.jsonl)",
        "no conversation (row 6 of chat.jsonl)",
        "no user turn (row 4 of chat.jsonl)",
    ]


def test_sharegpt_conversations_are_read_with_or_without_naming_them(tmp_path: Path) -> None:
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "Answer as a physician."},
                {"from": "human", "value": "Does walking help my knees?"},
                {"from": "gpt", "value": "Usually yes: cartilage is fed by movement."},
            ],
            "title": "Knees",
        }
    ]
    write_jsonl(tmp_path / "sharegpt.jsonl", rows)
    for extra in ("", ", messages: messages", ", messages: conversations"):
        result = run(write(tmp_path, f"  - {{type: dataset, path: sharegpt.jsonl{extra}}}"), tmp_path)
        (row,) = dataset_rows(result)
        assert (row["question"], row["answer"]) == (
            "Does walking help my knees?",
            "Usually yes: cartilage is fed by movement.",
        )
        assert row["system"] == "Answer as a physician." and row["title"] == "Knees"


def test_a_column_map_reads_a_spreadsheet_export(tmp_path: Path) -> None:
    csv = tmp_path / "sheet.csv"
    csv.write_text(
        "Prompt,Response,Episode,Name,Labels\n"
        '"What is LDL?","LDL carries cholesterol to the tissues; too much of it, for long, narrows arteries.",'
        '007,"Cholesterol, Explained","heart; lipids"\n'
        '"Does fiber lower LDL?","Soluble fiber does, by a few percent.",007,"Cholesterol, Explained",\n',
        encoding="utf-8",
    )
    columns = "{question: Prompt, answer: Response, group: Episode, title: Name, tags: Labels}"
    result = run(write(tmp_path, f"  - {{type: dataset, path: sheet.csv, columns: {columns}}}"), tmp_path)
    rows = by_question(dataset_rows(result))
    assert rows["What is LDL?"]["video_id"] == "007"  # text as written, not the number 7
    assert rows["What is LDL?"]["title"] == "Cholesterol, Explained"
    assert rows["What is LDL?"]["tags"] == ["heart", "lipids"]
    assert rows["Does fiber lower LDL?"]["tags"] == []


def test_hostile_cells_become_drops_with_the_row_number(tmp_path: Path) -> None:
    lines = [
        {"question": "  ", "answer": "An answer to a blank question."},
        {"question": "What is ketosis?", "answer": None},
        {"answer": "No question at all."},
        {"question": 42, "answer": 3.5},  # numbers are kept as text
        {"question": "Nested?", "answer": {"text": "an object"}},
        {"question": "What is ketosis?", "answer": "Burning fat for fuel."},
        {"question": "What is ketosis?", "answer": "Burning fat for fuel."},  # the same row twice
    ]
    write_jsonl(tmp_path / "qa.jsonl", lines)
    result = run(write(tmp_path, "  - {type: dataset, path: qa.jsonl}"), tmp_path)
    rows = dataset_rows(result)
    reasons = sorted(r["reason"] for r in rows if r["status"] == "dropped")
    assert reasons == [
        "no answer (row 2 of qa.jsonl)",
        "no question (row 1 of qa.jsonl)",
        "no question (row 3 of qa.jsonl)",
        "the same row again (same group, question and answer)",
    ]
    ok = {(r["question"], r["answer"]) for r in rows if r["status"] == "ok"}
    assert ok == {("42", "3.5"), ("Nested?", '{"text": "an object"}'), ("What is ketosis?", "Burning fat for fuel.")}
    assert len({r["id"] for r in rows}) == len(rows)


def test_mlx_lm_prompt_completion_files_are_read_without_a_column_map(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "Is salt bad?", "completion": "For salt-sensitive people."}])
    (row,) = dataset_rows(run(write(tmp_path, "  - {type: dataset, path: train.jsonl}"), tmp_path))
    assert (row["question"], row["answer"], row["status"]) == ("Is salt bad?", "For salt-sensitive people.", "ok")


def test_a_missing_column_fails_naming_the_file_the_column_and_the_field(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [{"prompt": "Is salt bad?", "response": "For some people."}])
    with pytest.raises(RecipeError) as caught:
        run(write(tmp_path, "  - {type: dataset, path: qa.jsonl}"), tmp_path)
    message = str(caught.value)
    assert "qa.jsonl: no column 'question' (its columns: prompt, response)" in message
    assert "set sources[0].columns.question" in message and "sources[0].messages for chat data" in message
    source = "  - {type: dataset, path: qa.jsonl, columns: {question: prompt, answer: response, title: name}}"
    with pytest.raises(RecipeError, match=r"no column 'name' .*set sources\[0\]\.columns\.title"):
        run(write(tmp_path, source), tmp_path)
    # optional columns under their default names may be absent, even written out as in the docs
    source = (
        "  - type: dataset\n    path: qa.jsonl\n    columns: {question: prompt, answer: response, "
        "group: video_id, title: title, tags: tags}"
    )
    (row,) = dataset_rows(run(write(tmp_path, source), tmp_path))
    assert (row["question"], row["title"], row["tags"]) == ("Is salt bad?", None, [])


def test_a_missing_column_through_the_cli_exits_1_without_a_traceback(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", [{"q": "Is salt bad?", "a": "For some people."}])
    recipe = write(tmp_path, "  - {type: dataset, path: qa.jsonl, columns: {question: q, answer: answer}}")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            str(recipe),
            "--until",
            "sources",
            "--runs-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1, proc.stderr
    assert "qa.jsonl: no column 'answer' (its columns: q, a); set sources[0].columns.answer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_empty_file_and_a_missing_file_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(RecipeError, match=r"empty\.jsonl: no rows \(the file is empty\)"):
        run(write(tmp_path, "  - {type: dataset, path: empty.jsonl}"), tmp_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RecipeError, match=r"empty\.csv: no rows"):
        run(write(tmp_path, "  - {type: dataset, path: empty.csv}"), tmp_path)
    with pytest.raises(RecipeInvalid) as caught:
        run(write(tmp_path, "  - {type: dataset, path: data/missing-*.jsonl}"), tmp_path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (4, "sources[0].path")
    assert "no data file at" in problem.message and "relative to the recipe file" in problem.message


def test_a_broken_file_names_the_file_and_the_format(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text('{"question": "ok?", "answer": "yes"}\n{"question": "broken\n')
    with pytest.raises(RecipeError, match=r"qa\.jsonl: not readable as jsonl \("):
        run(write(tmp_path, "  - {type: dataset, path: qa.jsonl}"), tmp_path)


def test_hf_paths_are_accepted_and_a_network_failure_says_what_to_do(tmp_path: Path) -> None:
    from engine.pipeline.recipes import load_recipe

    recipe = load_recipe(write(tmp_path, "  - {type: dataset, path: 'hf://datasets/org/name/data/train.parquet'}"))
    assert recipe.sources[0].path == "hf://datasets/org/name/data/train.parquet"
    with pytest.raises(RecipeInvalid, match=r"is not hf://datasets/<org>/<name>/<file>"):
        load_recipe(write(tmp_path, "  - {type: dataset, path: 'hf://org/name'}"))
    # DuckDB told not to fetch its httpfs extension: the failure a machine without network sees,
    # without this test touching the network.
    offline = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    with pytest.raises(DatasetUnreadable) as caught:
        read_table("hf://datasets/org/name/data/train.parquet", "parquet", "sources[0] (hf://...)", offline)
    message = str(caught.value)
    assert message.startswith("sources[0] (hf://...): could not read it through DuckDB (")
    assert "need the network and DuckDB's httpfs extension" in message and "download the file" in message


def test_title_and_id_filters_drop_dataset_rows_with_reasons(tmp_path: Path) -> None:
    rows = [
        {"question": "Why lift weights?", "answer": "Muscle stores glucose.", "video_id": "gym", "title": "Strength"},
        {"question": "Why walk?", "answer": "It lowers blood pressure.", "video_id": "walk", "title": "Walking"},
        {
            "question": "How did you start?",
            "answer": "My father.",
            "video_id": "guest",
            "title": "A Conversation with Ann",
        },
        {"question": "Favourite race?", "answer": "Any hilly one.", "video_id": "guest2", "title": "Trail talk ft. Bo"},
        {"question": "Untitled?", "answer": "No title here.", "video_id": "misc"},
    ]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    source = (
        "  - type: dataset\n    path: qa.jsonl\n"
        "    title_exclude: ['(?i)\\bconversation with\\b', '\\bft\\.']\n    exclude_ids: [walk]\n"
    )
    result = run(write(tmp_path, source), tmp_path)
    status = {r["question"]: (r["status"], r["reason"]) for r in dataset_rows(result)}
    assert status["Why lift weights?"] == ("ok", None)
    assert status["Untitled?"] == ("ok", None)
    assert status["Why walk?"] == ("dropped", "excluded id (row 2 of qa.jsonl)")
    assert status["How did you start?"][1].startswith("title matches title_exclude '(?i)\\\\bconversation with\\\\b'")
    assert status["Favourite race?"][1].startswith("title matches title_exclude '\\\\bft\\\\.'")
    # a single row, by its own id
    row_id = next(r["id"] for r in dataset_rows(result) if r["question"] == "Why lift weights?")
    source = f"  - type: dataset\n    path: qa.jsonl\n    title_include: ['^S', '^W']\n    exclude_ids: [{row_id}]\n"
    status = {r["question"]: (r["status"], r["reason"]) for r in dataset_rows(run(write(tmp_path, source), tmp_path))}
    assert status["Why lift weights?"] == ("dropped", "excluded id (row 1 of qa.jsonl)")
    assert status["Why walk?"] == ("ok", None)
    assert status["Untitled?"] == ("dropped", "title does not match title_include (row 5 of qa.jsonl)")


def test_title_and_id_filters_drop_local_transcripts_before_they_are_read(tmp_path: Path) -> None:
    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    source = (
        "  - type: local\n    path: transcripts\n    title_exclude: ['(?i)breakfast']\n    exclude_ids: [insulin]\n"
    )
    result = run(write(tmp_path, source), tmp_path, until="transcripts")
    status = {r["video_id"]: (r["status"], r["reason"]) for r in table(result, "sources")}
    assert status["insulin"] == ("dropped", "excluded id")
    assert status["breakfast"] == ("dropped", "title matches title_exclude '(?i)breakfast'")
    assert status["fasting_basics"] == ("ok", None)
    assert {r["video_id"] for r in table(result, "transcripts")} == {"fasting_basics"}


def test_a_bad_title_regex_is_a_located_problem_on_any_source_type(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "qa.jsonl", ROWS)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("hello there")
    sources = (
        "  - {type: local, path: t, title_include: ['(']}\n  - {type: dataset, path: qa.jsonl, title_exclude: ['[']}"
    )
    with pytest.raises(RecipeInvalid) as caught:
        run(write(tmp_path, sources), tmp_path)
    paths = sorted(p.path for p in caught.value.problems)
    assert paths == ["sources[0].title_include[0]", "sources[1].title_exclude[0]"]


def sources_step(result: RunResult) -> tuple[str, str]:
    step = next(s for s in result.steps if s.name == "sources")
    return step.status, step.key


def test_rows_are_keyed_by_content_not_by_where_the_file_lives(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "qa.jsonl", ROWS)
    status, key = sources_step(run(write(tmp_path, "  - {type: dataset, path: data/qa.jsonl}"), tmp_path))
    assert status == "ran"
    # moved (and renamed): the same bytes, the same key, nothing reruns
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "data" / "qa.jsonl", tmp_path / "elsewhere" / "renamed.jsonl")
    moved = run(write(tmp_path, "  - {type: dataset, path: elsewhere/*.jsonl}"), tmp_path)
    assert sources_step(moved) == ("cached", key)
    # one byte edited: a new key
    path = tmp_path / "elsewhere" / "renamed.jsonl"
    path.write_bytes(path.read_bytes().replace(b"3 am", b"4 am", 1))
    edited = run(write(tmp_path, "  - {type: dataset, path: elsewhere/renamed.jsonl}"), tmp_path)
    status, new_key = sources_step(edited)
    assert status == "ran" and new_key != key
    assert "Why do I wake at 4 am?" in by_question(dataset_rows(edited))


def test_renaming_the_files_of_a_glob_keeps_the_key(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "a.jsonl", ROWS[:1])
    write_jsonl(tmp_path / "data" / "b.jsonl", ROWS[1:])
    recipe = write(tmp_path, "  - {type: dataset, path: 'data/*.jsonl'}")
    status, key = sources_step(run(recipe, tmp_path))
    (tmp_path / "data" / "a.jsonl").rename(tmp_path / "data" / "z.jsonl")  # now listed last
    assert sources_step(run(recipe, tmp_path)) == ("cached", key)
