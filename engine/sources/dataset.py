"""Reading a `type: dataset` source: existing question/answer pairs, through DuckDB.

DuckDB reads every format (JSONL, JSON, CSV, Parquet) and `hf://` paths with one call each, and
infers the columns, so a spreadsheet export and a hub dataset need no code of their own. Each
file is read on its own: an error names the file, and a file's rows are keyed by its bytes.
Rows become plain dicts of the sources table; a row that cannot be used stays, dropped, with why.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import DatasetUnreadable
from engine.sources.filters import title_id_reason
from engine.sources.settings import DatasetSource

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
REMOTE_PREFIX = "hf://"
HF_PATH = re.compile(r"^hf://datasets/[^/]+/[^/]+/.+")
# Roles of chat turns, as OpenAI/mlx-lm (`role`) and ShareGPT (`from`) spell them.
USER_ROLES = frozenset({"user", "human"})
ASSISTANT_ROLES = frozenset({"assistant", "gpt", "model", "bot", "chatgpt"})
CHAT_COLUMNS = ("messages", "conversations")
COMPLETION_COLUMNS = ("prompt", "completion")  # mlx-lm's other training layout


def row_digest(parts: list[Any]) -> str:
    """A short content id (sources sit below the pipeline layer, so not its hashing module)."""
    text = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def is_remote(path: str) -> bool:
    return path.startswith(REMOTE_PREFIX)


def file_format(path: str, declared: str) -> str | None:
    """The format of one file: as declared, else by extension (None: unknown extension)."""
    if declared != "auto":
        return declared
    return EXTENSIONS.get(Path(path).suffix.lower())


def data_files(base_dir: Path, pattern: str) -> list[Path]:
    """The files a local dataset path names (a file, a glob, or a folder's data files), sorted."""
    root = Path(pattern).expanduser()
    root = root if root.is_absolute() else base_dir / root
    if root.is_dir():
        found = [p for p in root.iterdir() if p.suffix.lower() in EXTENSIONS]
    elif any(ch in pattern for ch in "*?["):
        found = [Path(p) for p in glob.glob(str(root), recursive=True)]
    else:
        found = [root] if root.exists() else []
    return sorted(p for p in found if p.is_file() and not p.name.startswith("."))


@dataclass(frozen=True)
class Table:
    """What DuckDB read from one file: column names, and rows as dicts of Python values."""

    columns: list[str]
    records: list[dict[str, Any]]


_READERS = {
    # sample_size=-1: infer the types from every row, so a number in row 30,000 cannot break them
    "jsonl": "read_json_auto(?, format='newline_delimited', sample_size=-1)",
    "json": "read_json_auto(?, sample_size=-1)",
    # text as written: a group id "007" or a tag list must not become a number
    "csv": "read_csv_auto(?, header=true, all_varchar=true)",
    "parquet": "read_parquet(?)",
}


def read_table(target: str, fmt: str, shown: str, duckdb_config: dict[str, Any] | None = None) -> Table:
    """Every row of one file (or hf:// path), read by DuckDB; errors name the file.

    `duckdb_config` is DuckDB's own connection settings (e.g. no extension downloads).
    """
    import duckdb  # lazy: only a recipe with a dataset source reads one

    con = duckdb.connect(config=duckdb_config or {})
    try:
        kinds = con.execute(f"DESCRIBE SELECT * FROM {_READERS[fmt]}", [target]).fetchall()
        columns = [str(k[0]) for k in kinds]
        # A value whose type differs between rows (text here, a list there), even deep inside a
        # conversation, is typed JSON: it comes back as JSON text and is decoded here, whole.
        json_typed = {str(k[0]) for k in kinds if "JSON" in str(k[1]).upper()}
        select = ", ".join(f"to_json({_quoted(c)})" if c in json_typed else _quoted(c) for c in columns)
        cursor = con.execute(f"SELECT {select} FROM {_READERS[fmt]}", [target])
        records = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    except duckdb.Error as e:
        raise DatasetUnreadable(_read_error(target, fmt, shown, e)) from None
    finally:
        con.close()
    for record in records:
        for name in json_typed:
            record[name] = _from_json(record[name])
    if not records or columns == ["json"] and all(r["json"] is None for r in records):
        raise DatasetUnreadable(f"{shown}: no rows (the file is empty); put question/answer rows in it")
    return Table(columns, records)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_error(target: str, fmt: str, shown: str, error: Exception) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if is_remote(target):
        return (
            f"{shown}: could not read it through DuckDB ({first}); hf:// paths need the network and "
            "DuckDB's httpfs extension; without them, download the file and point `path` at it"
        )
    return f"{shown}: not readable as {fmt} ({first}); fix the file or set the source's `format`"


def _from_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class Layout:
    """How one file's columns map to a row: question/answer columns, or a chat column."""

    question: str | None
    answer: str | None
    chat: str | None
    group: str | None
    title: str | None
    tags: str | None


def layout(source: DatasetSource, columns: list[str], shown: str, where: str) -> Layout:
    """The columns to read, checked against the file: a column the recipe names must be there."""
    cols = source.columns
    named = cols.model_fields_set  # written in the recipe, not defaults

    def optional(field: str) -> str | None:
        """group/title/tags may be absent, unless the recipe renamed them: then the name is a promise."""
        name = getattr(cols, field)
        if name in columns:
            return name
        if name != type(cols).model_fields[field].default:
            raise DatasetUnreadable(_missing(shown, name, columns, f"{where}.columns.{field}"))
        return None

    chat = _chat_column(source, columns, shown, where)
    if chat is not None:
        return Layout(None, None, chat, optional("group"), optional("title"), optional("tags"))
    question, answer = cols.question, cols.answer
    if not {"question", "answer"} & named and question not in columns and set(COMPLETION_COLUMNS) <= set(columns):
        question, answer = COMPLETION_COLUMNS  # mlx-lm's completions layout, with nothing said
    for field, name in (("question", question), ("answer", answer)):
        if name not in columns:
            hint = f"{where}.columns.{field}" + ("" if field in named else f" (or {where}.messages for chat data)")
            raise DatasetUnreadable(_missing(shown, name, columns, hint))
    return Layout(question, answer, None, optional("group"), optional("title"), optional("tags"))


def _chat_column(source: DatasetSource, columns: list[str], shown: str, where: str) -> str | None:
    if source.messages is not None:
        candidates = [source.messages] + (["conversations"] if source.messages == "messages" else [])
        found = next((c for c in candidates if c in columns), None)
        if found is None:
            raise DatasetUnreadable(_missing(shown, source.messages, columns, f"{where}.messages"))
        return found
    question_named = {"question", "answer"} & source.columns.model_fields_set
    if source.columns.question in columns or question_named:
        return None
    return next((c for c in CHAT_COLUMNS if c in columns), None)  # chat data with nothing said


def _missing(shown: str, name: str, columns: list[str], field: str) -> str:
    have = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return f"{shown}: no column {name!r} (its columns: {have}); set {field} to the column that holds it"


def rows_of(
    source: DatasetSource, table: Table, layout_: Layout, file_digest: str, shown: str, fmt: str
) -> list[dict[str, Any]]:
    """The sources-table rows of one file: each with its id, group, status and reason."""
    out = []
    for n, record in enumerate(table.records, start=1):
        out.append(_row(source, record, layout_, n, file_digest, shown, fmt))
    return out


def _row(
    source: DatasetSource, record: dict, lay: Layout, n: int, file_digest: str, shown: str, fmt: str
) -> dict[str, Any]:
    if lay.chat is not None:
        question, answer, system, why = chat_turns(record.get(lay.chat))
    else:
        question, answer = _text(record.get(lay.question or "")), _text(record.get(lay.answer or ""))
        system, why = None, None
    group = _text(record.get(lay.group)) if lay.group else None
    title = _text(record.get(lay.title)) if lay.title else None
    if why is None and not question:
        why = "no question"
    if why is None and not answer:
        why = "no answer"
    row_id = row_digest([group or "", question or "", answer or ""])
    if why is not None:  # distinct ids for rows that cannot be used: they carry too little to differ
        row_id = row_digest([file_digest, n, "dropped"])
    where = f"row {n} of {shown}"  # after the reason: `recipe show` groups by what comes first
    status, reason = ("dropped", f"{why} ({where})") if why else ("ok", None)
    if status == "ok" and (filtered := title_id_reason(title, (group, row_id), source)) is not None:
        status, reason = "dropped", f"{filtered} ({where})"
    return {
        "id": row_id,
        "video_id": group or row_id,  # a row without a group is its own group in the split
        "source": "dataset",
        "title": title,
        "path": shown,
        "format": fmt,
        "digest": file_digest,
        "question": question,
        "answer": answer,
        "tags": tags_of(record.get(lay.tags)) if lay.tags else [],
        "system": system,
        "status": status,
        "reason": reason,
    }


def _text(value: Any) -> str | None:
    """A cell as text: None for null or blank; numbers as written."""
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value).strip()
    return text or None


def tags_of(value: Any) -> list[str]:
    """Tags as a list of lower-case words: a list, JSON text of a list, or text split at commas."""
    if value is None:
        return []
    if isinstance(value, str):
        parsed = _from_json(value) if value.strip().startswith("[") else None
        items: Iterable[Any] = parsed if isinstance(parsed, list) else re.split(r"[,;|]", value)
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        items = [value]
    return [str(t).strip().lower() for t in items if t is not None and str(t).strip()]


def chat_turns(value: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(question, answer, system, why not) of one conversation.

    The first user turn is the question and the assistant turn right after it the answer; a
    later exchange is left out (the answers table holds one question per row).
    """
    turns = _from_json(value)
    if not isinstance(turns, list) or not turns:
        return None, None, None, "no conversation"
    system = question = None
    for i, turn in enumerate(turns):
        role, content = _turn(turn)
        if role == "system" and question is None and system is None:
            system = content
        elif role in USER_ROLES and question is None:
            question = content
            nxt = _turn(turns[i + 1]) if i + 1 < len(turns) else (None, None)
            if nxt[0] not in ASSISTANT_ROLES:
                return question, None, system, "no assistant turn after the first user turn"
            return question, nxt[1], system, None
    return None, None, system, "no user turn"


def _turn(turn: Any) -> tuple[str | None, str | None]:
    if not isinstance(turn, dict):
        return None, None
    role = turn.get("role") if turn.get("role") is not None else turn.get("from")
    content = turn.get("content") if turn.get("content") is not None else turn.get("value")
    if isinstance(content, list):  # OpenAI content parts: [{"type": "text", "text": ...}]
        content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return (str(role).strip().lower() if role is not None else None), _text(content)
