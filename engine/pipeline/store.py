"""The DuckDB store: content-keyed step tables, a catalog, and per-item caches.

One file (default `runs/store.duckdb`) holds every step table as `<step>_<key16>`. A table is
written under a temporary name and renamed in the same transaction as its catalog row, so a
killed process leaves either the whole table or nothing. Per-item caches (LLM responses,
transcripts) commit each item as it arrives, which is what makes a killed run resume with
nothing lost. A lock file next to the database keeps a second process out; it is taken on the
resolved path, so a symlink or a `runs/../runs/` spelling reaches the same lock.

A damaged file (truncated, garbled, not a database) is refused on open before any write
(engine.pipeline.store_open); a damaged block found later stops the store: every later call
raises StoreDamaged and the connection closes without a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import StoreDamaged
from engine.pipeline.hashing import canonical_json
from engine.pipeline.store_open import CATALOG, is_damage, open_store, short
from engine.pipeline.store_open import StoreLock as StoreLock  # where engine.inspect.runs finds it

Row = dict[str, Any]  # one table row, column name -> value

CATALOG_DDL = f"""
CREATE TABLE IF NOT EXISTS {CATALOG} (
    key VARCHAR PRIMARY KEY, step VARCHAR, table_name VARCHAR, config JSON, upstream JSON,
    rows BIGINT, seconds DOUBLE, metrics JSON, engine_version VARCHAR, created TIMESTAMP
)"""


def table_name(step: str, key: str) -> str:
    """The one place that names step tables."""
    return f"{step}_{key[:16]}"


def cache_table_name(name: str) -> str:
    return f"_cache_{name}"


class Store:
    """A DuckDB file of step tables. Use as a context manager: it holds the store lock."""

    def __init__(self, path: Path | str, wait: bool = False, read_only: bool = False):
        self.path = Path(path)  # as given: what messages say
        file = self.path.resolve()  # what is locked and opened: one file however it is reached
        file.parent.mkdir(parents=True, exist_ok=True)
        self.lock = StoreLock(file, str(self.path))
        self.damaged = False
        self._mutex = threading.RLock()  # one connection shared by worker threads
        if not read_only:
            self.lock.acquire(wait=wait)
        try:
            self.con = open_store(file, str(self.path), read_only, wait)
            if not read_only:
                with self._guard():
                    self.con.execute(CATALOG_DDL)
        except BaseException:
            self.lock.release()  # a store that failed to open is not held
            raise

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.damaged:  # a checkpoint would write blocks into a damaged file: leave the WAL
            try:
                self.con.execute("PRAGMA disable_checkpoint_on_shutdown")
            except Exception:  # noqa: BLE001, S110 - closing must not fail; DuckDB may refuse anything now
                pass
        self.con.close()
        self.lock.release()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn DuckDB's "this block is unreadable" into StoreDamaged, and stop using the file."""
        import duckdb

        if self.damaged:
            raise StoreDamaged(str(self.path), "an earlier read found a damaged block", during="using")
        try:
            yield
        except duckdb.Error as e:
            if not is_damage(e):
                raise
            self.damaged = True
            raise StoreDamaged(str(self.path), short(e), during="reading") from e

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._mutex, self._guard():
            return self.con.execute(sql, params or []).fetchall()

    # -- step tables -----------------------------------------------------------------------

    def catalog_entry(self, key: str) -> Row | None:
        rows = self.query(f"SELECT * FROM {CATALOG} WHERE key = ?", [key])
        return rows[0] if rows else None

    def has(self, key: str) -> bool:
        entry = self.catalog_entry(key)
        return entry is not None and self.table_exists(entry["table_name"])

    def table_exists(self, name: str) -> bool:
        return bool(self.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [name]))

    def table(self, key: str) -> Table:
        entry = self.catalog_entry(key)
        if entry is None:
            raise KeyError(key)
        return Table(self, entry["table_name"])

    def write_step(
        self, step: str, key: str, columns: dict[str, str], rows: Iterable[Row], meta: dict[str, Any]
    ) -> Table:
        """Materialise rows as the table of (step, key) atomically, with its catalog row."""
        final = table_name(step, key)
        tmp = f"_tmp_{final}_{os.getpid()}"
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
            count = _write_jsonl(f, rows)
            ndjson = f.name
        try:
            with self._mutex, self._guard():
                try:
                    self._create_from_jsonl(tmp, final, columns, ndjson, count)
                    self._commit_catalog(step, key, final, count, meta)
                except BaseException:
                    self._rollback()  # the connection stays usable (and the store unchanged)
                    raise
        finally:
            os.unlink(ndjson)
        return Table(self, final)

    def _create_from_jsonl(self, tmp: str, final: str, columns: dict[str, str], ndjson: str, count: int) -> None:
        ddl = ", ".join(f'"{c}" {t}' for c, t in columns.items())
        spec = "{" + ", ".join(f"'{c}': '{t}'" for c, t in columns.items()) + "}"
        self.con.execute("BEGIN TRANSACTION")
        self.con.execute(f'DROP TABLE IF EXISTS "{tmp}"')
        self.con.execute(f'CREATE TABLE "{tmp}" ({ddl})')
        if count:
            self.con.execute(
                f"INSERT INTO \"{tmp}\" SELECT * FROM read_json(?, format='newline_delimited', "
                f"columns={spec}, maximum_object_size=268435456)",
                [ndjson],
            )
        self.con.execute(f'DROP TABLE IF EXISTS "{final}"')
        self.con.execute(f'ALTER TABLE "{tmp}" RENAME TO "{final}"')

    def _commit_catalog(self, step: str, key: str, final: str, count: int, meta: dict[str, Any]) -> None:
        self.con.execute(f"DELETE FROM {CATALOG} WHERE key = ?", [key])
        self.con.execute(
            f"INSERT INTO {CATALOG} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                key,
                step,
                final,
                canonical_json(meta.get("config")),
                json.dumps(meta.get("upstream")),
                count,
                meta.get("seconds", 0.0),
                json.dumps(meta.get("metrics") or {}, default=str),
                __version__,
            ],
        )
        self.con.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            self.con.execute("ROLLBACK")
        except Exception:  # noqa: BLE001, S110 - no transaction open, or DuckDB already ended it
            pass

    def query(self, sql: str, params: Iterable[Any] | None = None) -> list[Row]:
        with self._mutex, self._guard():
            cur = self.con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def catalog(self) -> list[Row]:
        return self.query(f"SELECT * FROM {CATALOG} ORDER BY created")

    def drop_step(self, key: str) -> None:
        entry = self.catalog_entry(key)
        if entry:
            with self._mutex, self._guard():
                self.con.execute(f'DROP TABLE IF EXISTS "{entry["table_name"]}"')
                self.con.execute(f"DELETE FROM {CATALOG} WHERE key = ?", [key])

    def item_cache(self, name: str) -> ItemCache:
        return ItemCache(self, cache_table_name(name))

    def export_tables(self, target: Path, tables: dict[str, str]) -> None:
        """Copy step tables into another DuckDB file under plain names (`{alias: table}`).

        The file is built under a temporary name and renamed: a kill or a damaged block
        mid-copy leaves the previous file (or none), never half of one.
        """
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed export (we hold the lock)
            _remove_database(stale)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with self._mutex, self._guard():
                self.con.execute(f"ATTACH '{_sql_string(tmp)}' AS run_export")
                try:
                    for alias, name in tables.items():
                        self.con.execute(f'CREATE TABLE run_export."{alias}" AS SELECT * FROM "{name}"')
                finally:
                    self.con.execute("DETACH run_export")
        except BaseException:
            _remove_database(tmp)
            raise
        _wal(target).unlink(missing_ok=True)  # an old WAL next to the target would be replayed into the new file
        tmp.replace(target)


class Table:
    """A handle on one materialised table."""

    def __init__(self, store: Store, name: str):
        self.store, self.name = store, name

    def __repr__(self) -> str:
        return f"Table({self.name})"

    def rows(self, where: str = "") -> list[Row]:
        clause = f" WHERE {where}" if where else ""
        return self.store.query(f'SELECT * FROM "{self.name}"{clause}')

    def ok_rows(self) -> list[Row]:
        """Rows that did not fail or get skipped (steps mark those in a `status` column)."""
        if "status" in self.columns():
            return self.rows("status = 'ok'")
        return self.rows()

    def count(self) -> int:
        return int(self.store.execute(f'SELECT count(*) FROM "{self.name}"')[0][0])

    def columns(self) -> list[str]:
        return [r[0] for r in self.store.execute(f'DESCRIBE "{self.name}"')]

    def sql(self, query: str, params: Iterable[Any] | None = None) -> list[Row]:
        """Run a query where `{t}` stands for this table."""
        return self.store.query(query.replace("{t}", f'"{self.name}"'), params)


class ItemCache:
    """A persistent key -> JSON cache; every `put` is committed at once."""

    def __init__(self, store: Store, table: str):
        self.store, self.table = store, table
        store.execute(f'CREATE TABLE IF NOT EXISTS "{table}" (key VARCHAR PRIMARY KEY, value JSON, created TIMESTAMP)')

    def get(self, key: str) -> Any | None:
        rows = self.store.execute(f'SELECT value FROM "{self.table}" WHERE key = ?', [key])
        return json.loads(rows[0][0]) if rows else None

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        rows = self.store.execute(f'SELECT key, value FROM "{self.table}" WHERE list_contains(?, key)', [keys])
        return {k: json.loads(v) for k, v in rows}

    def put(self, key: str, value: Any) -> None:
        self.store.execute(
            f'INSERT OR REPLACE INTO "{self.table}" VALUES (?, ?, now())', [key, json.dumps(value, ensure_ascii=False)]
        )

    def put_many(self, items: list[tuple[str, Any]]) -> None:
        """Many entries in one statement: one commit (one fsync) for all; a key given twice keeps
        its last value (one statement may not replace the same row twice)."""
        latest = dict(items)
        if not latest:
            return
        rows = ", ".join(["(?, ?, now())"] * len(latest))
        params = [v for key, value in latest.items() for v in (key, json.dumps(value, ensure_ascii=False))]
        self.store.execute(f'INSERT OR REPLACE INTO "{self.table}" VALUES {rows}', params)

    def delete(self, key: str) -> None:
        self.store.execute(f'DELETE FROM "{self.table}" WHERE key = ?', [key])

    def keys(self) -> list[str]:
        return [r[0] for r in self.store.execute(f'SELECT key FROM "{self.table}"')]

    def items(self) -> Iterator[tuple[str, Any]]:
        for k, v in self.store.execute(f'SELECT key, value FROM "{self.table}"'):
            yield k, json.loads(v)

    def __len__(self) -> int:
        return int(self.store.execute(f'SELECT count(*) FROM "{self.table}"')[0][0])


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _remove_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    _wal(path).unlink(missing_ok=True)


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")


def _write_jsonl(f: Any, rows: Iterable[Row]) -> int:
    count = 0
    for row in rows:
        f.write(json.dumps(row, ensure_ascii=False, default=str))
        f.write("\n")
        count += 1
    return count
