"""`recipe show`: one run's steps, failures by reason, dataset and training headlines."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from engine.runs import effective_status, read_manifest, read_metrics


def run_summary(run_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(run_dir)
    return {"run_dir": str(run_dir), "manifest": manifest, "status": effective_status(manifest),
            "metrics": read_metrics(run_dir), "problems": item_problems(run_dir)}


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


def _reason_kind(reason: str | None) -> str:
    """Group reasons that differ only in details ('too short (54 < 100)' -> 'too short')."""
    return (reason or "unknown").split(" (")[0].split(":")[0][:60]


def render_run(summary: dict[str, Any]) -> str:
    manifest = summary["manifest"]
    lines = [f"run {manifest.get('run_id')}  recipe {manifest.get('recipe')}  status {summary['status']}",
             f"folder {summary['run_dir']}", ""]
    for name, step in manifest.get("steps", {}).items():
        seconds = f"{step['seconds']:.1f}s" if "seconds" in step else ""
        lines.append(f"  {name:<12} {step.get('status', ''):<8} {str(step.get('rows', '')):>7} rows  {seconds}")
        if step.get("error"):
            lines.append(f"      error: {step['error']}")
    for table, counts in summary["problems"].items():
        lines.append(f"\n  {table}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()))
    lines.extend(_metric_lines(summary["metrics"]))
    return "\n".join(lines)


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for step, values in metrics.items():
        flat = {k: v for k, v in values.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        if flat:
            shown = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(flat.items())[:8])
            lines.append(f"\n  {step}: {shown}")
    return lines
