"""Evaluation prompt sets: items, JSON / JSONL files with located problems, probe word checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data.eval_set import DEFAULT_PROBES, EvalQuestion, load_questions_file, missing_words, parse_item
from engine.data.scores import probe_check


def test_string_and_object_items() -> None:
    assert parse_item("Why fast?") == EvalQuestion(prompt="Why fast?")
    assert EvalQuestion(prompt="Why fast?").kind == "voice"
    item = parse_item({"prompt": "Name two fasts.", "expected": "16:8 and OMAD", "max_tokens": 900, "kind": "voice"})
    assert isinstance(item, EvalQuestion) and item.expected == "16:8 and OMAD" and item.max_tokens == 900
    assert parse_item("   ") == "an empty prompt"
    assert "is not a prompt" in str(parse_item(12))
    assert "unknown field 'promt'" in str(parse_item({"promt": "x"}))
    assert "missing required field 'prompt'" in str(parse_item({"expected": "x"}))
    assert "max_tokens" in str(parse_item({"prompt": "x", "max_tokens": 0}))
    assert "not an integer" in str(parse_item({"prompt": "x", "max_tokens": 1.5}))  # as the recipe says it
    assert "is for probes" in str(parse_item({"prompt": "x", "must_include": ["a"]}))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_file_skips_blank_lines_and_locates_every_bad_line(tmp_path: Path) -> None:
    good = write(
        tmp_path / "set.jsonl",
        '"What is autophagy?"\n\n{"prompt": "Hi", "kind": "probe", "must_include": ["hello"]}\n',
    )
    questions, problems = load_questions_file(good)
    assert problems == [] and [q.prompt for q in questions] == ["What is autophagy?", "Hi"]
    assert questions[1].kind == "probe" and questions[1].must_include == ("hello",)

    bad = write(
        tmp_path / "bad.jsonl",
        '"ok"\n{"prompt": "cut off", \n  {"prompt": "p", "kind": "probee"}\n[1, 2]\n{"prompt": "x"} trailing\n',
    )
    questions, problems = load_questions_file(bad)
    assert [q.prompt for q in questions] == ["ok"]
    assert {p.file for p in problems} == {str(bad)}
    assert [(p.line, p.col) for p in problems] == [(2, 23), (3, 3), (4, 1), (5, 17)]
    assert "not a JSON value" in problems[0].message and "one prompt" in problems[0].message
    assert "'voice' or 'probe'" in problems[1].message
    assert str(problems[2]).startswith(f"{bad}:4:1: [1, 2] is not a prompt")


def test_json_file_is_a_list_with_items_located(tmp_path: Path) -> None:
    good = write(
        tmp_path / "set.json",
        json.dumps(["Why?", {"prompt": "How?", "expected": "Slowly.", "max_tokens": 40}], indent=2),
    )
    questions, problems = load_questions_file(good)
    assert problems == [] and questions[1] == EvalQuestion(prompt="How?", expected="Slowly.", max_tokens=40)

    bad_item = write(tmp_path / "item.json", '[\n  "fine",\n  {"prompt": "x", "extra": 1}\n]\n')
    _, problems = load_questions_file(bad_item)
    assert [(p.line, p.col) for p in problems] == [(3, 3)] and "unknown field 'extra'" in problems[0].message

    broken = write(tmp_path / "broken.json", '[\n  "a",\n  "b"\n  "c"\n]')
    _, problems = load_questions_file(broken)
    assert [(p.line, p.col) for p in problems] == [(4, 3)] and "not valid JSON" in problems[0].message

    not_list = write(tmp_path / "obj.json", '{"questions": ["a"]}')
    assert "is a list of prompts" in load_questions_file(not_list)[1][0].message


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("set.csv", b"prompt\nWhy?\n", "is .json"),
        ("empty.jsonl", b"\n\n", "no prompts in the file"),
        ("empty.json", b"[]", "no prompts in the file"),
        ("utf16.jsonl", '"Why?"\n'.encode("utf-16-le"), "NUL byte"),
        ("latin1.jsonl", '"Caf\u00e9?"\n'.encode("latin-1"), "not UTF-8"),
    ],
)
def test_unusable_files_are_one_located_problem(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    questions, problems = load_questions_file(path)
    assert questions == () and len(problems) == 1
    assert problems[0].file == str(path) and message in problems[0].message


def test_bom_file_reads(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(["Caf\u00e9 question?"]).encode())
    assert load_questions_file(path) == ((EvalQuestion(prompt="Caf\u00e9 question?"),), [])


def test_must_include_is_case_insensitive_whole_words_with_alternatives() -> None:
    probe = EvalQuestion(prompt="q", kind="probe", must_include=("Paris", ("12", "twelve"), "New  York"))
    assert missing_words(probe, "paris has 12 arrondissements... new york too") == []
    assert missing_words(probe, "PARIS, TWELVE, NEW\nYORK") == []
    assert missing_words(probe, "Parisian 120 New York") == ["Paris", "12|twelve"]
    c_plus = EvalQuestion(prompt="q", kind="probe", must_include=("C++",))
    assert missing_words(c_plus, "I write C++.") == [] and missing_words(c_plus, "I write C.") == ["C++"]


def test_probe_check_says_why_it_failed() -> None:
    capital = DEFAULT_PROBES[2]
    assert probe_check(capital, "It is Paris.") == {"passed": True, "missing": []}
    assert probe_check(capital, "  ") == {"passed": False, "missing": ["(an empty answer)"]}
    assert probe_check(capital, "Paris is big. " * 10)["missing"] == ["(a repetition loop)"]
    assert probe_check(capital, "Lyon.") == {"passed": False, "missing": ["paris"]}
    no_words = EvalQuestion(prompt="Say something", kind="probe")
    assert probe_check(no_words, "Something.")["passed"]  # a probe without words: a sane answer passes
