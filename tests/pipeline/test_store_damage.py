"""A damaged store on real files, made from the store of a real run (questions and answers asked of
the fake OpenAI server over HTTP): a clear error and no write on open or mid-run, `recipe store
check` says what is readable, `recipe store salvage` saves it and a rerun reuses the saved replies."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

import engine.llm.client as llm
from engine.cli import main
from engine.errors import RecipeError, StoreDamaged
from engine.pipeline.runner import Paths, run_recipe
from engine.pipeline.salvage import check_store, salvage_store
from engine.pipeline.store import Store
from engine.steps.base import RunOptions
from fakes.openai_server import FakeOpenAI
from helpers.pipeline import BASE_RECIPE, CASES, pipeline_model

UNTIL = "answers"


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe over the three test transcripts, run once until answers: a real store to damage."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.01)
    shutil.copytree(CASES / "engine_transcripts", tmp_path / "transcripts")
    with FakeOpenAI(pipeline_model) as srv:
        _write_recipe(tmp_path, srv.base_url)
        run_recipe(tmp_path / "recipe.yaml", _paths(tmp_path), until=UNTIL, options=RunOptions(quiet=True))
    shutil.copyfile(_paths(tmp_path).store, tmp_path / "good.duckdb")
    return tmp_path


def _write_recipe(root: Path, base_url: str) -> None:
    (root / "recipe.yaml").write_text(BASE_RECIPE.format(base_url=base_url), encoding="utf-8")


def _paths(root: Path) -> Paths:
    return Paths(runs_dir=root / "runs", store=root / "runs" / "store.duckdb")


BLOCK = 262144  # DuckDB's block size: each has its own checksum


def damage(good: Path, store: Path, how: str) -> None:
    """Replace the store by a damaged copy of `good`."""
    data = good.read_bytes()
    if how == "truncated":
        store.write_bytes(data[: len(data) // 2])
    elif how == "garbled":  # the first block of noise that opens, then fails reading a step's table
        store.write_bytes(garbled(good, opens_but_a_step_table_is_damaged))
    elif how == "garbled-not-replies":  # the first that spares the LLM replies but damages something else
        store.write_bytes(garbled(good, replies_intact_something_else_damaged))
    elif how == "text":
        store.write_text("store.duckdb: replaced by a text file\n", encoding="utf-8")
    elif how == "empty":
        store.write_bytes(b"")
    elif how == "directory":
        store.unlink()
        store.mkdir()


def garbled(good: Path, wanted: Callable[[Path], bool]) -> bytes:
    """`good` with 4 KiB of noise in one block (a bad sector, a torn copy): the first block, from the
    middle of the file on, whose damage gives the case `wanted` asks for. Which block holds what
    depends on DuckDB's layout, so the test looks for it instead of hard-coding an offset."""
    data = good.read_bytes()
    noise = random.Random(0).randbytes(4096)
    probe = good.with_name("probe.duckdb")
    blocks = range(len(data) // BLOCK)
    for block in sorted(blocks, key=lambda b: abs(b - len(blocks) // 2)):
        offset = block * BLOCK + BLOCK // 2
        variant = data[:offset] + noise + data[offset + len(noise) :]
        probe.write_bytes(variant)
        try:
            if wanted(probe):
                return variant
        finally:
            probe.unlink()
    raise AssertionError(f"no single damaged block of {good.name} gives that case")


def _opens(path: Path) -> bool:
    try:
        Store(path, read_only=True).close()
        return True
    except StoreDamaged:
        return False


def opens_but_a_step_table_is_damaged(path: Path) -> bool:
    return _opens(path) and any(t.kind == "step" for t in check_store(path).damaged)


def replies_intact_something_else_damaged(path: Path) -> bool:
    try:
        report = check_store(path)
    except RecipeError:
        return False
    return bool(report.damaged) and all(t.complete for t in report.tables if t.name == "_cache_llm")


def fingerprint(path: Path) -> str:
    """The bytes of the store and whatever sits beside it (a WAL would be a write)."""
    siblings = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path)
    content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return f"{content} {siblings}"


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize("how", ["truncated", "garbled", "text", "empty", "directory"])
def test_a_damaged_store_is_a_clear_error_and_never_written(project: Path, how: str) -> None:
    store = _paths(project).store
    (run_dir,) = [p.parent for p in (project / "runs").glob("*/manifest.json")]
    data_before = (run_dir / "data.duckdb").read_bytes()
    damage(project / "good.duckdb", store, how)
    before = fingerprint(store)
    with FakeOpenAI(pipeline_model) as srv:
        _write_recipe(project, srv.base_url)
        # through $RECIPE_STORE: `--store` itself refuses a directory before the store is opened
        env = {"RECIPE_STORE": str(store), "RECIPE_RUNS": str(project / "runs")}
        code, out = cli("run", str(project / "recipe.yaml"), "--until", UNTIL, env=env)
    assert code == 1, out
    assert f"store {store} is damaged" in out and "Traceback" not in out
    assert f"recipe store salvage {store.parent / 'store.salvaged.duckdb'} --store {store}" in out
    assert fingerprint(store) == before  # not a byte written, no WAL beside it
    # the run folder of the earlier, complete run is not left half-written
    assert (run_dir / "data.duckdb").read_bytes() == data_before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # a garbled block opens, then fails mid-run: said in the manifest; the others never start a run
    assert manifest["status"] == ("failed" if how == "garbled" else "complete")
    if manifest["status"] == "failed":
        assert "damaged" in manifest.get("error", "") + json.dumps(manifest["steps"])


def test_garbled_blocks_found_mid_run_stop_it_without_a_checkpoint(project: Path) -> None:
    """The garbled store opens (its catalog is intact); the damage shows when a table is read."""
    store = _paths(project).store
    damage(project / "good.duckdb", store, "garbled")
    with Store(store) as opened:  # the probe passes: metadata and catalog are readable
        with pytest.raises(StoreDamaged, match="reading it failed"):
            for entry in opened.catalog():
                opened.table(entry["key"]).rows()
        with pytest.raises(StoreDamaged, match="earlier read found a damaged block"):
            opened.item_cache("llm").put("k", {"text": "never written"})
    assert not (store.parent / "store.duckdb.wal").exists()


def test_check_lists_what_is_readable(project: Path) -> None:
    store = _paths(project).store
    code, out = cli("store", "check", "--store", str(store))
    assert code == 0 and "every row readable" in out and "_cache_llm" in out
    damage(project / "good.duckdb", store, "garbled")
    code, out = cli("store", "check", "--store", str(store))
    assert code == 1 and "BAD" in out and "recipe store salvage" in out
    report = check_store(store)
    assert {t.name for t in report.damaged} and all(t.errors for t in report.damaged)


@pytest.mark.parametrize("how", ["garbled-not-replies", "truncated"])
def test_salvage_saves_readable_replies_and_a_rerun_reuses_them(project: Path, how: str) -> None:
    store = _paths(project).store
    with duckdb.connect(str(project / "good.duckdb"), read_only=True) as con:
        replies = con.execute("SELECT count(*) FROM _cache_llm").fetchone()[0]
    damage(project / "good.duckdb", store, how)
    before = fingerprint(store)
    new = project / "salvaged.duckdb"
    code, out = cli("store", "salvage", str(new), "--store", str(store))
    assert code == 0, out
    assert fingerprint(store) == before  # read only
    assert f"into {new}" in out and f"mv {store} {store}.damaged && mv {new} {store}" in out
    with duckdb.connect(str(new), read_only=True) as con:
        saved = con.execute("SELECT count(*) FROM _cache_llm").fetchone()[0]
        catalog = {r[0] for r in con.execute("SELECT table_name FROM _catalog").fetchall()}
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert catalog <= tables  # every catalog entry points at a whole table
    if how == "garbled-not-replies":
        assert saved == replies > 0  # the noise missed the replies: every one is saved
    store.rename(store.with_name("store.duckdb.damaged"))
    new.rename(store)
    with FakeOpenAI(pipeline_model) as srv:
        _write_recipe(project, srv.base_url)
        result = run_recipe(project / "recipe.yaml", _paths(project), until=UNTIL, options=RunOptions(quiet=True))
    assert result.status == "complete"
    assert srv.calls == replies - saved  # exactly the replies that were lost are asked again


def test_salvage_refuses_to_overwrite(project: Path) -> None:
    store = _paths(project).store
    code, out = cli("store", "salvage", str(store), "--store", str(store))
    assert code == 1 and "other than" in out
    code, out = cli("store", "salvage", str(project / "good.duckdb"), "--store", str(store))
    assert code == 1 and "already exists" in out


def test_a_store_nothing_can_be_read_from_says_start_fresh(project: Path) -> None:
    store = _paths(project).store
    damage(project / "good.duckdb", store, "text")
    with pytest.raises(Exception, match="cannot be read at all"):
        salvage_store(store, project / "new.duckdb")
    code, out = cli("store", "check", "--store", str(store))
    assert code == 1 and f"mv {store} {store}.damaged" in out and not (project / "new.duckdb").exists()


def test_a_partly_readable_cache_is_salvaged_row_range_by_row_range(tmp_path: Path) -> None:
    """20,000 cached replies over several blocks; one block garbled costs only the rows stored in it."""
    good = tmp_path / "good.duckdb"
    with Store(good) as store:
        table = store.item_cache("llm").table
        store.execute(
            f"INSERT INTO {table} SELECT printf('key-%05d', i), json_object('text', printf('reply %d ', i) "
            "|| repeat('word ', 30)), now() FROM range(20000) t(i)"
        )
    with duckdb.connect(str(good), read_only=True) as con:
        original = dict(con.execute("SELECT key, value FROM _cache_llm").fetchall())
    data, block = good.read_bytes(), 262144  # DuckDB's block size: one checksum each
    bad = tmp_path / "bad.duckdb"
    for offset in range(block // 2, len(data), block):  # the first block whose damage hits the replies in part
        bad.write_bytes(data[:offset] + bytes(b ^ 0xFF for b in data[offset : offset + 64]) + data[offset + 64 :])
        (cache,) = [t for t in check_store(bad).tables if t.name == "_cache_llm"]
        if 0 < cache.readable < cache.total:  # type: ignore[operator]
            break
    else:
        pytest.fail("no single damaged block left the cache partly readable")
    assert cache.errors and "checksum" in cache.errors[0]
    report = salvage_store(bad, tmp_path / "new.duckdb")
    assert [t.readable for t in report.tables if t.name == "_cache_llm"] == [cache.readable]
    with duckdb.connect(str(tmp_path / "new.duckdb"), read_only=True) as con:
        saved = dict(con.execute("SELECT key, value FROM _cache_llm").fetchall())
    assert len(saved) == cache.readable and all(original[k] == v for k, v in saved.items())
