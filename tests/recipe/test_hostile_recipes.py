"""Files no editor would write on purpose: each is one located error, fast, never a traceback.

The cases here are generated (too large, or not text) rather than kept in tests/cases/recipes.
Each ran into a traceback, a hang or gigabytes of memory before the recipe reader was rebuilt
on parser events with limits.
"""

from __future__ import annotations

import codecs
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.pipeline.recipes import load_recipe
from engine.recipe.file_text import MAX_BYTES
from engine.recipe.yaml_reader import MAX_DEPTH, MAX_VALUES

GOOD = "name: r\ncreator:\n  name: A\nsources:\n  - type: local\n    path: t.txt\n"  # 6 lines


def validate(path: Path) -> tuple[int, list[str], float]:
    """(exit code, located lines, seconds) of `recipe validate path`."""
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["validate", str(path)])
    elapsed = time.perf_counter() - started
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and "--debug" not in result.output, result.output
    return result.exit_code, lines, elapsed


def write(tmp_path: Path, data: str | bytes, name: str = "r.yaml") -> Path:
    (tmp_path / "t.txt").write_text("So, insulin.")
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def assert_one_problem(tmp_path: Path, data: str | bytes, where: str, message: str, seconds: float = 3.0) -> None:
    path = write(tmp_path, data)
    code, lines, elapsed = validate(path)
    assert code == 1, lines
    assert lines[-1] == "1 problem found", lines
    assert lines[0].startswith(f"{path}:{where}: "), lines[0]
    assert message in lines[0], lines[0]
    assert elapsed < seconds, f"took {elapsed:.1f} s"


def billion_laughs(levels: int = 9) -> str:
    """Each level is a list of nine aliases of the one above: 9**9 strings once expanded."""
    lines = ["lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]")
    return GOOD + "\n".join(lines) + "\n"


def test_alias_bomb_stops_at_the_alias_that_crosses_the_budget(tmp_path: Path) -> None:
    # Before: 1.7 GB of memory in 60 s and no answer.
    assert_one_problem(tmp_path, billion_laughs(), "11:14", "aliases expand to more than 10,000 values (at *lol3)")


def test_aliases_within_the_budget_still_share_settings(tmp_path: Path) -> None:
    text = GOOD + (
        "llm:\n  model: &small openai/gpt-4o-mini\n  passes:\n"
        "    questions: &cheap {model: *small, temperature: 0.2}\n    augment: *cheap\n"
        "    answers:\n      <<: *cheap\n      temperature: 0.9\n"
    )
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.llm.for_pass("augment").temperature == 0.2
    assert recipe.llm.for_pass("answers").model == "openai/gpt-4o-mini"
    assert recipe.llm.for_pass("answers").temperature == 0.9


@pytest.mark.parametrize(
    ("nesting", "where"),
    [  # the root mapping is level 1: the error is at the 50th bracket, or the 50th indented item
        pytest.param("description: " + "[" * 3000 + "]" * 3000 + "\n", "7:63", id="flow-lists"),
        pytest.param("description: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", "7:210", id="flow-mappings"),
        pytest.param("description:\n" + "".join("  " * i + "- \n" for i in range(1, 900)), "57:101", id="block"),
    ],
)
def test_deep_nesting_is_a_located_error_not_a_recursion_error(tmp_path: Path, nesting: str, where: str) -> None:
    # Before: RecursionError after 5.8 s.
    assert_one_problem(tmp_path, GOOD + nesting, where, f"nested more than {MAX_DEPTH} levels deep")


def test_a_file_over_the_size_limit_names_the_limit(tmp_path: Path) -> None:
    # Before: a 10 MB description was read, parsed and accepted (3 s); a recipe is a few KB.
    text = GOOD + "description: " + "a" * 10_000_000 + "\n"
    assert_one_problem(tmp_path, text, "1:1", f"a recipe may be at most {MAX_BYTES:,} bytes (1 MB)", seconds=1.5)


def test_too_many_values_stop_early(tmp_path: Path) -> None:
    text = GOOD + "eval:\n  questions: [" + "q, " * 200_000 + "q]\n"  # 600 KB: under the size limit
    assert_one_problem(tmp_path, text, "8:59985", f"more than {MAX_VALUES:,} values")


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
    ],
)
def test_a_recipe_saved_with_a_byte_order_mark_loads(tmp_path: Path, encoding: str, bom: bytes) -> None:
    # Before: UTF-16 (Windows Notepad's "Unicode") was a UnicodeDecodeError traceback.
    text = GOOD + "description: Café, naïve 😀\n"
    recipe = load_recipe(write(tmp_path, bom + text.encode(encoding)))
    assert recipe.name == "r" and recipe.description == "Café, naïve 😀"


@pytest.mark.parametrize(
    ("data", "where", "message"),
    [
        pytest.param(
            (GOOD + "description: Caf\xe9\n").encode("latin-1"), "7:17", "byte 0xe9 (byte offset 84)", id="latin-1"
        ),
        pytest.param(GOOD.encode("utf-16-le"), "1:2", "a NUL byte", id="utf-16-without-bom"),
        pytest.param(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8, "1:8", "a NUL byte", id="binary"),
        pytest.param(b"\xff\xfe" + b"n\x00a", "1:1", "byte-order mark but is not utf-16", id="truncated-utf-16"),
        pytest.param(
            GOOD + "description: a\x1bb\n",
            "7:15",
            "control character '\\x1b' (U+001B) is not allowed",
            id="escape-char",
        ),
    ],
)
def test_undecodable_bytes_are_located(tmp_path: Path, data: bytes | str, where: str, message: str) -> None:
    assert_one_problem(tmp_path, data, where, message)


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        pytest.param("description: !!python/name:os.system\n", "7:14", "tag !!python/name:os.system", id="py-name"),
        pytest.param("train: !!python/object/new:dict {}\n", "7:8", "tag !!python/object/new:dict", id="py-new"),
        pytest.param("eval: !!omap [{a: 1}]\n", "7:7", "tag !!omap", id="omap"),
        pytest.param("description: !!timestamp 2024-01-01\n", "7:14", "tag !!timestamp", id="timestamp"),
        pytest.param("train:\n  iters: !!int ten\n", "8:10", "'ten' is not a valid !!int", id="bad-int"),
        pytest.param("!weird name2: x\n", "7:1", "tag !weird", id="tag-on-key"),
    ],
)
def test_any_tag_beyond_the_core_schema_is_an_error_at_its_line(
    tmp_path: Path, extra: str, where: str, message: str
) -> None:
    assert_one_problem(tmp_path, GOOD + extra, where, message)


def test_core_tags_and_dates_read_as_plain_values(tmp_path: Path) -> None:
    # Before: `2024-13-45` unquoted was a ValueError traceback (ruamel built a date from it).
    text = GOOD + "description: 2024-13-45\ntrain:\n  iters: !!int '40'\n  learning_rate: !!float 1\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.description == "2024-13-45"
    assert recipe.train.iters == 40 and recipe.train.learning_rate == 1.0


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "~\n", "[]\n", "42\n", "- a\n- b\n", "---\n...\n", "a: b: c\n", '"unclosed\n'],
)
def test_degenerate_files_are_located_errors(tmp_path: Path, text: str) -> None:
    code, lines, _ = validate(write(tmp_path, text))
    assert code == 1
    assert all(re.match(r".*r\.yaml:\d+:\d+: \S", line) for line in lines[:-1]), lines
    assert re.fullmatch(r"\d+ problems? found", lines[-1]), lines


def test_an_unreadable_recipe_is_one_clear_line(tmp_path: Path) -> None:
    """A path that cannot be read as a file names itself and exits 1. (CI runs as root, which
    reads through chmod 0, so a folder is the unreadable path that works everywhere.)"""
    folder = tmp_path / "r.yaml"
    folder.mkdir()
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1
    assert f"error: {folder}: is a folder, not a recipe file" in result.output
    assert "Traceback" not in result.output


def test_a_utf16_recipe_runs_and_its_report_shows_it(tmp_path: Path) -> None:
    """The run folder keeps the file as given; the report decodes it the way validation did."""
    path = write(tmp_path, codecs.BOM_UTF16_LE + (GOOD.replace("name: A", "name: Café")).encode("utf-16-le"))
    runs = tmp_path / "runs"
    command = ["run", str(path), "--until", "sources", "--runs-dir", str(runs), "--store", str(runs / "s.duckdb")]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    [run_dir] = [p.parent for p in runs.glob("*/manifest.json")]
    assert (run_dir / "recipe.yaml").read_bytes() == path.read_bytes()
    assert "name: Café" in (run_dir / "report.html").read_text(encoding="utf-8")
