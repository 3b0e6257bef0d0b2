"""`recipe show`: one run's steps, failures by reason, dataset and training headlines."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from engine.data.sampling import describe, recorded_settings
from engine.inspect.folder import read_json, read_manifest, read_metrics
from engine.inspect.runs import effective_status
from engine.inspect.verdict import Verdict, run_verdict


def run_summary(run_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(run_dir)
    return {
        "run_dir": str(run_dir),
        "manifest": manifest,
        "status": effective_status(manifest),
        "metrics": read_metrics(run_dir),
        "problems": item_problems(run_dir),
        "failures": failed_items(run_dir),
        "dataset": dataset_stats(run_dir),
        "eval": eval_summary(run_dir),
        "sampling": recorded_settings(read_json(run_dir / "eval.json")) or _metrics_sampling(run_dir),
        "coverage": video_coverage(run_dir),
        "verdict": _verdict_fields(run_verdict(run_dir)),
    }


def _metrics_sampling(run_dir: Path) -> dict[str, Any]:
    """The settings metrics.json keeps (evaluate v4 and later) when eval.json is missing."""
    found = (read_metrics(run_dir).get("evaluate") or {}).get("sampling")
    return found if isinstance(found, dict) else {}


def _verdict_fields(found: Verdict | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {"line": found.line, "short": found.short_line, "warning": found.warning, "notes": found.notes}


def dataset_stats(run_dir: Path) -> dict[str, Any]:
    """Examples per split with mean question/answer words (from data.duckdb's split table)."""
    db = run_dir / "data.duckdb"
    if not db.is_file():
        return {}
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        cols = {
            r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'split'").fetchall()
        }
        if not {"split", "question", "answer"} <= cols:
            return {}
        where = "WHERE status = 'ok'" if "status" in cols else ""
        rows = con.execute(
            "SELECT split, count(*), avg(len(string_split(question, ' '))), "
            f"avg(len(string_split(answer, ' '))) FROM split {where} GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {
        name: {"examples": n, "question_words": round(q or 0, 1), "answer_words": round(a or 0, 1)}
        for name, n, q, a in rows
    }


def eval_summary(run_dir: Path) -> dict[str, Any]:
    """The evaluate step's summary (eval.json, else metrics.json)."""
    path = run_dir / "eval.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("summary") or {}
        except ValueError:
            pass
    return read_metrics(run_dir).get("evaluate") or {}


def item_problems(run_dir: Path) -> dict[str, dict[str, int]]:
    """Per step, how many rows failed or were skipped, by reason (from data.duckdb)."""
    db = run_dir / "data.duckdb"
    if not db.is_file():
        return {}
    import duckdb

    out: dict[str, dict[str, int]] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
            cols = {r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}
            if {"status", "reason"} <= cols:
                rows = con.execute(f"SELECT status, reason FROM \"{table}\" WHERE status <> 'ok'").fetchall()
                counts = Counter(f"{status}: {_reason_kind(reason)}" for status, reason in rows)
                if counts:
                    out[table] = dict(counts.most_common())
    return out


# The first of these a row has names it (a file's path before its video id).
NAME_COLUMNS = ("path", "video_id", "id", "artifact", "run")
SHOWN_PER_TABLE = 10


def failed_items(run_dir: Path, statuses: tuple[str, ...] = ("failed", "skipped")) -> dict[str, list[dict[str, Any]]]:
    """Per step, every failed or skipped row by name with its full reason: which files, not only
    how many (dropped rows are the filters' ordinary work, counted in `problems`; the report
    lists them too, with `statuses` including "dropped")."""
    db = run_dir / "data.duckdb"
    if not db.is_file():
        return {}
    import duckdb

    out: dict[str, list[dict[str, Any]]] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall():
            cols = [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]
            names = [c for c in NAME_COLUMNS if c in cols]
            if not {"status", "reason"} <= set(cols) or not names:
                continue
            name = "COALESCE(" + ", ".join(f'CAST("{c}" AS VARCHAR)' for c in names) + ")"  # a YouTube row has no path
            chunk = '"chunk"' if "chunk" in cols else "NULL"
            question = '"question"' if "question" in cols else "NULL"
            wanted = ", ".join("?" for _ in statuses)
            rows = con.execute(
                f'SELECT status, {name}, {chunk}, reason, {question} FROM "{table}" '
                f"WHERE status IN ({wanted}) ORDER BY status, 2",
                list(statuses),
            ).fetchall()
            items = [
                {"status": st, "name": _item_name(n, c), "reason": r, **({"question": q} if q else {})}
                for st, n, c, r, q in rows
            ]
            if items:
                out[table] = items
    return out


# Per video, the ok rows of each stage: (column, table, extra condition).
COVERAGE_STAGES = (
    ("chunks", "transcripts", ""),
    ("questions", "questions", ""),
    ("answers", "answers", ""),
    ("kept", "curate", ""),
    ("train", "split", " AND split = 'train'"),
    ("valid", "split", " AND split = 'valid'"),
    ("test", "split", " AND split = 'test'"),
)


def video_coverage(run_dir: Path) -> list[dict[str, Any]]:
    """Every source video with its rows at each stage, 0 where it has none (a video that yielded no
    question is absent from every later table: counted from sources, it still shows). A stage
    whose table this run lacks is None."""
    db = run_dir / "data.duckdb"
    if not db.is_file():
        return []
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        columns: dict[str, set[str]] = {}
        for table, column in con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall():
            columns.setdefault(table, set()).add(column)
        videos = _source_videos(con, columns.get("sources", set()))
        for stage, table, condition in COVERAGE_STAGES:
            if not {"video_id", "status"} <= columns.get(table, set()):
                continue
            counts = dict(
                con.execute(
                    f"SELECT video_id, count(*) FROM \"{table}\" WHERE status = 'ok'{condition} GROUP BY 1"
                ).fetchall()
            )
            for video_id in counts:  # rows of a video the sources table lacks (an older folder)
                videos.setdefault(video_id, {"video_id": video_id, "title": None, "status": None, "reason": None})
            for video in videos.values():
                video[stage] = counts.get(video["video_id"], 0)
    return list(videos.values())


def _source_videos(con: Any, cols: set[str]) -> dict[str, dict[str, Any]]:
    if "video_id" not in cols:
        return {}
    picked = [f'"{c}"' if c in cols else "NULL" for c in ("video_id", "title", "status", "reason")]
    rows = con.execute(f"SELECT {', '.join(picked)} FROM sources ORDER BY rowid").fetchall()
    videos: dict[str, dict[str, Any]] = {}
    for video_id, title, status, reason in rows:
        videos.setdefault(video_id, {"video_id": video_id, "title": title, "status": status, "reason": reason})
    return videos


def coverage_counts(coverage: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How many source videos reach the kept rows (else the furthest stage this run has)."""
    stage = next((s for s in ("kept", "answers", "questions", "chunks") if coverage and s in coverage[0]), None)
    if stage is None:
        return None
    without = [v["video_id"] for v in coverage if not v[stage]]
    per_video = [v[stage] for v in coverage if v[stage]]
    median = statistics.median(per_video) if per_video else 0
    return {
        "stage": stage,
        "videos": len(coverage),
        "with_rows": len(coverage) - len(without),
        "without": without,
        "median": median,
    }


def _item_name(name: Any, chunk: Any) -> str:
    return f"{name} chunk {chunk}" if chunk else str(name)


def _reason_kind(reason: str | None) -> str:
    """Group reasons that differ only in details ('too short (54 < 100)' -> 'too short')."""
    return (reason or "unknown").split(" (")[0].split(":")[0][:60]


def render_run(summary: dict[str, Any]) -> str:
    manifest = summary["manifest"]
    lines = [
        f"run {manifest.get('run_id')}  recipe {manifest.get('recipe')}  status {summary['status']}",
        f"folder {summary['run_dir']}",
        *_verdict_lines(summary.get("verdict")),
        *_device_line(manifest, summary["metrics"].get("train") or {}),
        "",
    ]
    for name, step in manifest.get("steps", {}).items():
        seconds = f"{step['seconds']:.1f}s" if "seconds" in step else ""
        lines.append(f"  {name:<12} {step.get('status', ''):<8} {str(step.get('rows', '')):>7} rows  {seconds}")
        if step.get("error"):
            lines.append(f"      error: {step['error']}")
    for table, counts in summary["problems"].items():
        lines.append(f"\n  {table}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()))
        lines.extend(_failure_lines(summary.get("failures", {}).get(table, [])))
    lines.extend(_metric_lines({k: v for k, v in summary["metrics"].items() if k != "evaluate"}))
    lines.extend(_dataset_lines(summary.get("dataset") or {}))
    lines.extend(_curation_lines(summary["metrics"].get("curate") or {}, summary.get("coverage") or []))
    lines.extend(_eval_lines(summary.get("eval") or {}))
    lines.extend(_sampling_lines(summary.get("sampling") or {}))
    return "\n".join(lines)


def _device_line(manifest: dict[str, Any], train: dict[str, Any]) -> list[str]:
    """`device gpu (NVIDIA H100, cuda)`, plus the ranks when training ran under mlx.launch; nothing
    for runs made before the manifest recorded the device."""
    from engine.models.device import describe

    if "device" not in manifest:
        return []
    line = f"device {describe(manifest['device'])}"
    dist = train.get("distributed") or {}
    if dist.get("world_size", 1) > 1:
        line += f"; trained on {dist['world_size']} ranks ({dist.get('backend')})"
    return [line]


def _verdict_lines(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    lines = [found["line"]]
    if found.get("warning"):
        lines.append(f"  WARNING: {found['warning']}")
    return lines + [f"  {note}" for note in found.get("notes") or []]


def _failure_lines(items: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"    {it['status']:<8} {it['name']}: {it['reason'] or 'no reason given'}" for it in items[:SHOWN_PER_TABLE]
    ]
    if len(items) > SHOWN_PER_TABLE:
        lines.append(f"    ... and {len(items) - SHOWN_PER_TABLE} more (recipe show --json lists them all)")
    return lines


def _dataset_lines(dataset: dict[str, Any]) -> list[str]:
    if not dataset:
        return []
    lines = ["", "  dataset:"]
    for name, s in dataset.items():
        lines.append(
            f"    {name:<6} {s['examples']:>6} examples  question {s['question_words']:.1f} words  "
            f"answer {s['answer_words']:.1f} words"
        )
    return lines


def _curation_lines(curate: dict[str, Any], videos: list[dict[str, Any]]) -> list[str]:
    """The curate step's statistics: rows at each stage, formatting shares, tags; the videos'
    coverage counted over every source (data.duckdb), else as curate saw it (older folders)."""
    lines = []
    if curate.get("stages"):
        lines.append("    stages   " + " -> ".join(f"{k} {v}" for k, v in curate["stages"].items()))
    if curate.get("formatting"):
        lines.append("    format   " + "  ".join(f"{k} {v:.0%}" for k, v in curate["formatting"].items()))
    if curate.get("tags"):
        top = sorted(curate["tags"].items(), key=lambda kv: -kv[1])[:8]
        lines.append("    tags     " + "  ".join(f"{k} {v}" for k, v in top))
    counts = coverage_counts(videos)
    if counts:
        none = counts["without"]
        listed = f" (none: {', '.join(map(str, none[:5]))}{', ...' if len(none) > 5 else ''})" if none else ""
        lines.append(
            f"    videos   {counts['with_rows']}/{counts['videos']} with {counts['stage']} rows{listed}, "
            f"median {_fmt(counts['median'])} per video with rows"
        )
        return lines
    coverage = curate.get("coverage") or {}
    if coverage:
        per_video = coverage.get("rows_per_video") or {}
        lines.append(
            f"    videos   {coverage.get('videos_with_rows')}/{coverage.get('videos')} with rows, "
            f"median {_fmt(per_video.get('median'))} rows per video"
        )
    return lines


def _eval_lines(ev: dict[str, Any]) -> list[str]:
    """Base vs tuned, one score per line; other summary numbers after."""
    names = [k[len("tuned_") :] for k in ev if k.startswith("tuned_")]
    if not ev:
        return []
    lines = ["", f"  eval: {'score':<22} {'base':>10} {'tuned':>10}"]
    for name in names:
        lines.append(f"        {name:<22} {_fmt(ev.get('base_' + name)):>10} {_fmt(ev.get('tuned_' + name)):>10}")
    rest = {k: v for k, v in ev.items() if not k.startswith(("base_", "tuned_"))}
    if rest:
        lines.append("        " + "  ".join(f"{k}={_fmt(v)}" for k, v in rest.items()))
    return lines


def _sampling_lines(sampling: dict[str, dict[str, Any]]) -> list[str]:
    """Which setting each score suffix is from, with every parameter."""
    if not sampling:
        return []
    lines = ["", "  eval settings (score suffix: setting, parameters):"]
    for key, record in sampling.items():
        suffix, label = record.get("summary_suffix") or "(none)", record.get("label", key)
        renamed = f' (called "{key}" in this eval.json)' if label != key else ""
        lines.append(f"        {suffix:<10} {label}{renamed}: {describe(record)}")
    return lines


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for step, values in metrics.items():
        flat = {k: v for k, v in values.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        if flat:
            shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(flat.items())[:8])
            lines.append(f"\n  {step}: {shown}")
    return lines
