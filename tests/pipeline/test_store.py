"""The DuckDB store on real files: atomic step tables, catalog, item caches, nested types."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from engine.pipeline.hashing import canonical_json, digest
from engine.pipeline.store import Store, table_name

KEY = "ab" * 32
COLUMNS = {
    "video_id": "VARCHAR",
    "segments": "STRUCT(start DOUBLE, duration DOUBLE, text VARCHAR)[]",
    "tags": "VARCHAR[]",
}
ROWS = [
    {"video_id": "v1", "segments": [{"start": 1.5, "duration": 2.0, "text": "so"}], "tags": ["a"]},
    {"video_id": "v2", "segments": [], "tags": []},
]


def test_write_step_roundtrips_nested_types(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        table = store.write_step("transcripts", KEY, COLUMNS, ROWS, {"config": {"a": 1}, "upstream": {}})
        assert table.name == table_name("transcripts", KEY) == "transcripts_" + KEY[:16]
        assert table.rows() == ROWS
        assert store.has(KEY) and store.catalog_entry(KEY)["rows"] == 2


def test_empty_step_output_still_creates_a_typed_table(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        table = store.write_step("questions", KEY, COLUMNS, [], {})
        assert table.count() == 0 and table.columns() == list(COLUMNS)


def test_rewrite_replaces_table_and_catalog_row(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        store.write_step("sources", KEY, COLUMNS, ROWS, {})
        store.write_step("sources", KEY, COLUMNS, ROWS[:1], {})
        assert store.table(KEY).count() == 1
        assert len(store.catalog()) == 1
        leftovers = store.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '_tmp_%'")
        assert leftovers == []


def test_item_cache_survives_reopen(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        cache = store.item_cache("llm")
        cache.put("k1", {"text": "hello", "n": 1})
        cache.put("k2", ["a"])
    with Store(tmp_path / "s.duckdb") as store:
        cache = store.item_cache("llm")
        assert cache.get("k1") == {"text": "hello", "n": 1}
        assert cache.get_many(["k1", "k2", "k3"]) == {"k1": {"text": "hello", "n": 1}, "k2": ["a"]}
        assert cache.get("missing") is None and len(cache) == 2


def test_export_tables_makes_a_standalone_file(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        store.write_step("sources", KEY, COLUMNS, ROWS, {})
        store.export_tables(tmp_path / "run.duckdb", {"sources": table_name("sources", KEY)})
    with duckdb.connect(str(tmp_path / "run.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM sources").fetchone()[0] == 2


def test_canonical_hash_ignores_key_order_but_not_values() -> None:
    assert canonical_json({"b": 1, "a": (1, 2)}) == '{"a":[1,2],"b":1}'
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({"a": 1}) != digest({"a": 1.5})


def test_unknown_key_raises(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store, pytest.raises(KeyError):
        store.table("nope")


def test_export_leaves_no_temporary_file_and_clears_a_killed_exports(tmp_path: Path) -> None:
    target = tmp_path / "run" / "data.duckdb"
    target.parent.mkdir()
    leftover = target.with_name(".data.duckdb.99999.tmp")  # a killed process's half-written export
    leftover.write_bytes(b"half a database")
    leftover.with_name(leftover.name + ".wal").write_bytes(b"its log")
    with Store(tmp_path / "s.duckdb") as store:
        store.write_step("sources", KEY, COLUMNS, ROWS, {})
        store.export_tables(target, {"sources": table_name("sources", KEY)})
        store.export_tables(target, {"again": table_name("sources", KEY)})  # over an existing file
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.duckdb"]
    with duckdb.connect(str(target), read_only=True) as con:
        assert [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()] == ["again"]
