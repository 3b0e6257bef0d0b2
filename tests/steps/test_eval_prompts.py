"""The evaluate step's prompts from the recipe: items, prompt files, probes, keys and validation."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main
from engine.data.eval_set import DEFAULT_PROBES, EvalQuestion
from engine.pipeline.hashing import digest
from engine.pipeline.recipes import load_recipe, parse_recipe
from engine.steps import evaluate

RECIPE = """\
name: t
creator: {name: Dr. Test}
sources:
  - type: local
    path: transcripts
"""


def project(tmp_path: Path, eval_yaml: str, files: dict[str, str] | None = None) -> Path:
    """A recipe file with the given eval section, beside a transcript and the given files."""
    (tmp_path / "transcripts").mkdir(parents=True, exist_ok=True)
    (tmp_path / "transcripts" / "one.txt").write_text("A transcript about fasting.", encoding="utf-8")
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE + eval_yaml, encoding="utf-8")
    return path


def test_string_and_object_items_with_a_512_token_default(tmp_path: Path) -> None:
    recipe = load_recipe(
        project(
            tmp_path,
            "eval:\n  questions:\n    - Why fast?\n"
            "    - {prompt: Explain insulin., expected: It stores energy., max_tokens: 900}\n",
        )
    )
    assert recipe.eval.max_tokens == 512
    cfg = evaluate.config(recipe)
    assert cfg.questions == (
        EvalQuestion(prompt="Why fast?"),
        EvalQuestion(prompt="Explain insulin.", expected="It stores energy.", max_tokens=900),
        *DEFAULT_PROBES,  # the recipe names no probe: the built-in three
    )


def test_questions_file_json_and_jsonl_relative_to_the_recipe(tmp_path: Path) -> None:
    jsonl = '"From the file?"\n{"prompt": "Count.", "kind": "probe", "must_include": [["3", "three"]]}\n'
    recipe = load_recipe(
        project(
            tmp_path / "a",
            "eval:\n  questions: [Inline first?]\n  questions_file: sets/eval.jsonl\n",
            {"sets/eval.jsonl": jsonl},
        )
    )
    prompts = [(q.prompt, q.kind) for q in evaluate.config(recipe).questions]
    # the recipe's own probe replaces the built-in ones
    assert prompts == [("Inline first?", "voice"), ("From the file?", "voice"), ("Count.", "probe")]

    as_json = json.dumps(["From the file?", {"prompt": "Count.", "kind": "probe", "must_include": [["3", "three"]]}])
    recipe_json = load_recipe(
        project(
            tmp_path / "b",
            "eval:\n  questions: [Inline first?]\n  questions_file: eval.json\n",
            {"eval.json": as_json},
        )
    )
    assert evaluate.config(recipe_json).questions == evaluate.config(recipe).questions


def test_the_files_content_keys_the_step_never_its_path(tmp_path: Path) -> None:
    text = '"Why fast?"\n"Why sleep?"\n'
    here = evaluate.config(
        load_recipe(project(tmp_path / "a", "eval:\n  questions_file: q.jsonl\n", {"q.jsonl": text}))
    )
    moved = evaluate.config(
        load_recipe(project(tmp_path / "b", "eval:\n  questions_file: other/set.jsonl\n", {"other/set.jsonl": text}))
    )
    inline = evaluate.config(load_recipe(project(tmp_path / "c", "eval:\n  questions: [Why fast?, Why sleep?]\n")))
    assert digest(here) == digest(moved) == digest(inline)
    (tmp_path / "b" / "other" / "set.jsonl").write_text(text + '"Why walk?"\n', encoding="utf-8")
    edited = evaluate.config(load_recipe(tmp_path / "b" / "recipe.yaml"))
    assert digest(edited) != digest(moved)


def test_recipe_probes_override_the_defaults_and_probes_false_drops_them(tmp_path: Path) -> None:
    base = {"name": "t", "creator": {"name": "Dr. T"}, "sources": [{"type": "local", "path": "."}]}
    (tmp_path / "one.txt").write_text("A transcript.", encoding="utf-8")
    own = {"prompt": "Spell cat.", "kind": "probe", "must_include": ["c-a-t"]}
    with_own = parse_recipe({**base, "eval": {"questions": ["Q?", own]}}, tmp_path)
    assert [q.prompt for q in evaluate.config(with_own).questions if q.kind == "probe"] == ["Spell cat."]
    without = parse_recipe({**base, "eval": {"questions": ["Q?"], "probes": False}}, tmp_path)
    assert [q.prompt for q in evaluate.config(without).questions] == ["Q?"]
    own_even_if_off = parse_recipe({**base, "eval": {"questions": [own], "probes": False}}, tmp_path)
    assert [q.prompt for q in evaluate.config(own_even_if_off).questions] == ["Spell cat."]


def test_validate_names_the_bad_line_of_a_prompt_file_and_exits_1(tmp_path: Path) -> None:
    lines = (
        '"Fine?"\n{"prompt": "Also fine", "max_tokens": 300}\n{"prompt": "broken",\n{"prompt": "x", "kind": "probes"}\n'
    )
    recipe = project(tmp_path, "eval:\n  questions_file: sets/real.jsonl\n", {"sets/real.jsonl": lines})
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 1, result.output
    shown = tmp_path / "sets" / "real.jsonl"
    assert f"{shown}:3:" in result.output and "not a JSON value" in result.output
    assert f"{shown}:4:1: kind:" in result.output and "'voice' or 'probe'" in result.output
    assert "Traceback" not in result.output

    (tmp_path / "sets" / "real.jsonl").unlink()
    missing = CliRunner().invoke(main, ["validate", str(recipe)])
    assert missing.exit_code == 1 and f"{recipe}:7:3: eval.questions_file:" in missing.output
    assert "no such file" in missing.output and "relative to the recipe's folder" in missing.output

    (tmp_path / "sets" / "real.jsonl").write_text('"Fine?"\n', encoding="utf-8")
    assert CliRunner().invoke(main, ["validate", str(recipe)]).exit_code == 0


def test_must_include_on_a_voice_prompt_is_a_located_problem(tmp_path: Path) -> None:
    recipe = project(tmp_path, "eval:\n  questions:\n    - Why?\n    - {prompt: Hi, must_include: [hello]}\n")
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 1
    assert f"{recipe}:9:7: eval.questions[1]: must_include is for probes" in result.output
