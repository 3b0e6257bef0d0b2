"""`recipe store check` and `recipe store salvage`: what a damaged store still holds, and a copy of it.

Both read the store read-only (it is never written to) and read every row, in ranges of rowids:
a damaged block costs only the rows stored in it. A range that fails is halved until the bad
rows are isolated, so a table that is partly readable gives back every row that can be read.

What salvage keeps: every readable row of the item caches (LLM replies, transcripts, ...: a
missing row is only a call made again) and of other tables; a step table only when all of its
rows were read back, with its catalog entry (a step table with rows missing would be trusted as
complete; without it the step is recomputed, from the salvaged caches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import RecipeError, StoreBusy, StoreUnreadable
from engine.pipeline.store_open import CATALOG, LOCK_CONFLICT, is_damage, lock_holder, short

if TYPE_CHECKING:
    import duckdb

CHUNK = 2048  # rows per read: big enough to be quick, small enough that one bad block costs little
OLD = "damaged"  # the alias the store being read gets next to the new one


@dataclass
class TableReport:
    name: str
    kind: str  # catalog | cache | step | other
    total: int | None  # rows the table's metadata says it has (None: unreadable too)
    readable: int = 0
    errors: list[str] = field(default_factory=list)
    kept: bool = True  # salvage: whether the table is in the new store

    @property
    def complete(self) -> bool:
        return not self.errors and (self.total is None or self.readable >= self.total)

    def describe(self) -> str:
        of = f"{self.readable} of {self.total}" if self.total is not None else f"{self.readable} of ?"
        text = f"{of} rows readable"
        return text + (f"; first error: {self.errors[0]}" if self.errors else "")


@dataclass
class StoreReport:
    path: str
    tables: list[TableReport]

    @property
    def damaged(self) -> list[TableReport]:
        return [t for t in self.tables if not t.complete]


def check_store(path: Path | str) -> StoreReport:
    """Read every row of every table of the store, read-only; StoreUnreadable if it does not open."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        _attach(con, Path(path), str(path))
        names = _table_names(con, str(path))
        kinds = _kinds(con, OLD, names)
        reports = []
        for name in names:
            report = TableReport(name, kinds[name], _total(con, OLD, name))
            report.readable = _read_ranges(con, OLD, name, report, _probe_rows(con, OLD, name))
            reports.append(report)
        return StoreReport(str(path), reports)
    finally:
        con.close()


def salvage_store(path: Path | str, target: Path | str) -> StoreReport:
    """Copy every readable row of the store at `path` into a new store at `target`."""
    import duckdb

    source, new = Path(path).resolve(), Path(target)
    _refuse_target(source, new, str(path))
    tmp = new.with_name(f".{new.name}.salvage.tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        _attach(con, source, str(path))
        report = _copy_all(con, str(path))
        con.execute(f"DETACH {OLD}")
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    tmp.replace(new)
    return report


def _refuse_target(source: Path, new: Path, shown: str) -> None:
    if new.resolve() == source:
        raise RecipeError(f"salvage writes a new store: give a path other than {shown} itself")
    if new.exists():
        raise RecipeError(f"{new} already exists; salvage writes a new file: give a path that does not exist")
    new.parent.mkdir(parents=True, exist_ok=True)


def _attach(con: duckdb.DuckDBPyConnection, source: Path, shown: str) -> None:
    """Attach the store read-only as OLD: it is never written to, whatever happens."""
    import duckdb

    if not source.exists():
        raise RecipeError(f"no store at {shown}; a run creates it (default runs/store.duckdb), or pass --store PATH")
    if not source.is_file() or source.stat().st_size == 0:
        raise StoreUnreadable(shown, "it is not a regular file" if not source.is_file() else "it is empty (0 bytes)")
    try:
        con.execute(f"ATTACH '{_sql_string(source.resolve())}' AS {OLD} (READ_ONLY)")
    except duckdb.Error as e:
        if LOCK_CONFLICT in str(e):
            raise StoreBusy(shown, lock_holder(e)) from None
        raise StoreUnreadable(shown, short(e)) from e


def _table_names(con: duckdb.DuckDBPyConnection, shown: str) -> list[str]:
    import duckdb

    try:
        return _tables(con, OLD)
    except duckdb.Error as e:
        raise StoreUnreadable(shown, f"its table list is damaged: {short(e)}") from e


def _copy_all(con: duckdb.DuckDBPyConnection, shown: str) -> StoreReport:
    names = _table_names(con, shown)
    kinds = _kinds(con, OLD, names)
    ddl = dict(con.execute(f"SELECT table_name, sql FROM duckdb_tables() WHERE database_name = '{OLD}'").fetchall())
    reports = [_copy_table(con, name, kinds[name], ddl[name]) for name in names]
    _drop_incomplete_steps(con, reports)
    return StoreReport(shown, reports)


def _copy_table(con: duckdb.DuckDBPyConnection, name: str, kind: str, ddl: str) -> TableReport:
    report = TableReport(name, kind, _total(con, OLD, name))
    con.execute(ddl)  # the same definition (types, primary key) in the new store

    def copy(lo: int, hi: int) -> int:
        rows = con.execute(f'INSERT INTO main."{name}" SELECT * FROM {OLD}.main."{name}" {_where(lo, hi)}')
        return int((rows.fetchone() or (0,))[0])

    report.readable = _read_ranges(con, OLD, name, report, copy)
    return report


def _drop_incomplete_steps(con: duckdb.DuckDBPyConnection, reports: list[TableReport]) -> None:
    """A step table is kept only whole, and only with its catalog entry (the key is in the entry)."""
    catalog = next((r for r in reports if r.kind == "catalog"), None)
    listed = {row[0] for row in con.execute(f"SELECT table_name FROM main.{CATALOG}").fetchall()} if catalog else set()
    for report in reports:
        if report.kind == "step" and (not report.complete or report.name not in listed):
            con.execute(f'DROP TABLE main."{report.name}"')
            report.kept = False
            if report.complete:
                report.errors.append("its catalog entry was lost, so its key is unknown")
    if catalog:
        kept = [r.name for r in reports if r.kind == "step" and r.kept]
        con.execute(f"DELETE FROM main.{CATALOG} WHERE NOT list_contains(?, table_name)", [kept])


def _tables(con: duckdb.DuckDBPyConnection, database: str) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
        "AND table_name NOT LIKE '\\_tmp\\_%' ESCAPE '\\' ORDER BY table_name",
        [database],
    ).fetchall()
    return [r[0] for r in rows]


def _kinds(con: duckdb.DuckDBPyConnection, database: str, names: list[str]) -> dict[str, str]:
    """catalog / cache / step / other; step tables are those the catalog names (or that look it)."""
    import duckdb

    listed: set[str] = set()
    if CATALOG in names:
        try:
            listed = {r[0] for r in con.execute(f'SELECT table_name FROM {database}.main."{CATALOG}"').fetchall()}
        except duckdb.Error:
            pass  # a damaged catalog: fall back to the naming rule below
    kinds = {}
    for name in names:
        if name == CATALOG:
            kinds[name] = "catalog"
        elif name.startswith("_cache_"):
            kinds[name] = "cache"
        elif name in listed or _looks_like_step(name):
            kinds[name] = "step"
        else:
            kinds[name] = "other"
    return kinds


def _looks_like_step(name: str) -> bool:
    step, _, key = name.rpartition("_")
    return bool(step) and len(key) == 16 and all(c in "0123456789abcdef" for c in key)


def _total(con: duckdb.DuckDBPyConnection, database: str, name: str) -> int | None:
    import duckdb

    try:
        return int(con.execute(f'SELECT count(*) FROM {database}.main."{name}"').fetchone()[0])  # type: ignore[index]
    except duckdb.Error:
        return None


def _probe_rows(con: duckdb.DuckDBPyConnection, database: str, name: str) -> Callable[[int, int], int]:
    """Reads every column of a range of rows (hashing the row makes DuckDB read each one)."""

    def probe(lo: int, hi: int) -> int:
        sql = f'SELECT count(hash(r)) FROM (SELECT * FROM {database}.main."{name}" {_where(lo, hi)}) r'
        return int(con.execute(sql).fetchone()[0])  # type: ignore[index]

    return probe


def _read_ranges(
    con: duckdb.DuckDBPyConnection,
    database: str,
    name: str,
    report: TableReport,
    take: Callable[[int, int], int],
) -> int:
    """Apply `take` (a copy, or a read) to every readable range of rowids; rows taken in all."""
    import duckdb

    try:
        found = con.execute(f'SELECT max(rowid) FROM {database}.main."{name}"').fetchone()
    except duckdb.Error as e:
        report.errors.append(short(e))
        return 0
    end = (found[0] if found and found[0] is not None else -1) + 1
    ranges = _Ranges(_probe_rows(con, database, name), report)
    return sum(ranges.take_readable(take, lo, min(lo + CHUNK, end)) for lo in range(0, end, CHUNK))


class _Ranges:
    """Finds the readable runs of rows around damaged ones with a logarithmic number of reads.

    A damaged block holds a contiguous run of rowids (of one column). Within a chunk that fails:
    the longest readable prefix is found by bisection, then the damaged run is skipped by
    galloping to the next readable row, and so on. Reading row by row instead costs one failed
    read per lost row (minutes for one bad block of a big cache). Rows that read fine but sit
    between two damaged runs closer than the gallop step may be counted lost: never a bad row kept.
    """

    def __init__(self, probe: Callable[[int, int], int], report: TableReport):
        self.probe, self.report = probe, report

    def take_readable(self, take: Callable[[int, int], int], lo: int, hi: int) -> int:
        taken, pos = 0, lo
        while pos < hi:
            good = self._readable_prefix(pos, hi)
            if good:
                taken += self._take(take, pos, pos + good)
                pos += good
            if pos < hi:
                pos = self._next_readable(pos, hi)
        return taken

    def _reads(self, lo: int, hi: int) -> bool:
        import duckdb

        try:
            self.probe(lo, hi)
            return True
        except duckdb.Error as e:
            if not is_damage(e):
                raise
            if not self.report.errors:
                self.report.errors.append(short(e))
            return False

    def _readable_prefix(self, pos: int, hi: int) -> int:
        """The most rows from `pos` that read back (bisection)."""
        if self._reads(pos, hi):
            return hi - pos
        ok, bad = 0, hi - pos
        while bad - ok > 1:
            mid = (ok + bad) // 2
            ok, bad = (mid, bad) if self._reads(pos, pos + mid) else (ok, mid)
        return ok

    def _next_readable(self, pos: int, hi: int) -> int:
        """The first readable row after the damaged row `pos` (galloping, then bisection); hi if none."""
        step = 1
        while pos + step < hi and not self._reads(pos + step, pos + step + 1):
            step *= 2
        if pos + step >= hi:
            return hi
        bad, good = pos + step // 2, pos + step
        while good - bad > 1:
            mid = (bad + good) // 2
            bad, good = (bad, mid) if self._reads(mid, mid + 1) else (mid, good)
        return good

    def _take(self, take: Callable[[int, int], int], lo: int, hi: int) -> int:
        import duckdb

        try:
            return take(lo, hi)
        except duckdb.Error as e:  # read fine a moment ago; if not now, these rows are lost too
            if not is_damage(e):
                raise
            self.report.errors.append(short(e))
            return 0


def _where(lo: int, hi: int) -> str:
    return f"WHERE rowid >= {int(lo)} AND rowid < {int(hi)}"


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")
