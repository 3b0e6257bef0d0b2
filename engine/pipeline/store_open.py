"""Opening the store file safely: damage and lock conflicts become clear errors, never a write.

Why a read-only probe first: DuckDB opened read-write on a damaged file may replay a WAL,
checkpoint and write blocks before anything fails; read-only it only reads. The probe reads
what every command needs at once (the table list and the catalog), so a store whose metadata is
damaged is refused before the run starts. A damaged data block elsewhere is only found when it
is read (checking every block would read the whole file on every command); the Store turns that
into the same error mid-run (see `is_damage`) and `recipe store check` reads everything.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import StoreBusy, StoreDamaged

if TYPE_CHECKING:
    import duckdb

CATALOG = "_catalog"

# DuckDB's words for "another process has this file open" (it names the holder's PID).
LOCK_CONFLICT = "Conflicting lock is held"
# DuckDB's words for a file it cannot read back: short reads of a truncated file, block
# checksums of a garbled one, headers of something that is not a database at all.
DAMAGE_MARKERS = (
    "Corrupt database file",
    "Could not read enough bytes",
    "not a valid DuckDB database",
    "database has been invalidated",
    "does not match stored checksum",
    "Serialization Error",
    "Failed to deserialize",
)
# Problems of the environment, not of the file: reported as DuckDB says them.
NOT_DAMAGE = ("Permission denied", "Read-only file system", "No space left")


class StoreLock:
    """An exclusive flock on `<store>.lock`; the file holds the owner's pid for the message.

    The lock sits next to the resolved file: every spelling of one store takes one lock.
    """

    def __init__(self, path: Path, shown: str | None = None):
        resolved = Path(path).resolve()
        self.path = resolved.with_name(resolved.name + ".lock")
        self.shown = shown or str(path)  # the path as the user gave it, for the message
        self._fd: int | None = None

    def acquire(self, wait: bool = False, poll: float = 0.5) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    pid = self._owner_pid(fd)
                    os.close(fd)
                    raise StoreBusy(self.shown, pid) from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    @staticmethod
    def _owner_pid(fd: int) -> int | None:
        text = os.pread(fd, 32, 0).decode(errors="ignore").strip()
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_damage(error: BaseException) -> bool:
    """Whether a DuckDB error says the file's bytes are bad (not a bad query or a full disk)."""
    text = str(error)
    return any(marker in text for marker in DAMAGE_MARKERS)


def lock_holder(error: BaseException) -> int | None:
    """The PID DuckDB names in a lock conflict, if any."""
    found = re.search(r"\(PID (\d+)\)", str(error))
    return int(found.group(1)) if found else None


def short(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."


def open_store(file: Path, shown: str, read_only: bool, wait: bool, poll: float = 0.5) -> duckdb.DuckDBPyConnection:
    """A connection to the store `file` (`shown` is the path as the user gave it, for messages).

    An existing file is first opened read-only and probed; only a file that passes is opened
    for writing. Raises StoreDamaged or StoreBusy.
    """
    if file.exists() or file.is_symlink():
        _refuse_non_database(file, shown)
        probe = _connect(file, shown, True, wait, poll)
        try:
            _probe(probe, shown)
        except BaseException:
            probe.close()
            raise
        if read_only:
            return probe
        probe.close()
    return _connect(file, shown, read_only, wait, poll)


def _refuse_non_database(file: Path, shown: str) -> None:
    if file.is_dir():
        raise StoreDamaged(shown, "a directory is at that path, not a DuckDB file")
    if not file.is_file():
        raise StoreDamaged(shown, "that path is not a regular file (a broken link, a device, a pipe?)")
    if file.stat().st_size == 0:
        raise StoreDamaged(shown, "the file is empty (0 bytes)")


def _connect(file: Path, shown: str, read_only: bool, wait: bool, poll: float) -> duckdb.DuckDBPyConnection:
    import duckdb  # lazy: keeps `recipe --help` fast

    while True:
        try:
            return duckdb.connect(str(file), read_only=read_only)
        except duckdb.Error as e:
            if LOCK_CONFLICT in str(e):
                if wait:  # another program (a duckdb shell, a notebook) holds it: queue behind it
                    time.sleep(poll)
                    continue
                raise StoreBusy(shown, lock_holder(e)) from None
            if any(text in str(e) for text in NOT_DAMAGE) or not file.exists():
                raise
            raise StoreDamaged(shown, short(e)) from e


def _probe(con: duckdb.DuckDBPyConnection, shown: str) -> None:
    """Read the table list and the whole catalog: what planning reads first."""
    import duckdb

    try:
        names = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if CATALOG in names:
            con.execute(f"SELECT * FROM {CATALOG}").fetchall()
    except duckdb.Error as e:
        if any(text in str(e) for text in NOT_DAMAGE):
            raise
        raise StoreDamaged(shown, short(e)) from e
