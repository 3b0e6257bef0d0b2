"""report.html for a run folder: one self-contained file (plots inlined as base64 PNG).

Sections: verdict, steps, dataset stats with length histograms, coverage per video, rows left out
with their reasons, LLM calls/tokens/cost, loss curves, sampling settings, eval scores base vs
tuned with a legend, probes, the answers side by side, and the recipe.
Works for any run folder, also one that stopped before training.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from engine.data.plots import histograms, integer_ticks, new_figure, png_data_uri
from engine.inspect.folder import RunData, load_run, loss_curves, recipe_text
from engine.inspect.html_parts import num, table
from engine.inspect.report_data import coverage_section, left_out_section, llm_section
from engine.inspect.report_eval import answers_section, probes_section, settings_section, summary_section
from engine.inspect.report_eval import marked as _marked  # noqa: F401 - the colouring rule, tested here
from engine.inspect.verdict import documents_verdict

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.ans{white-space:pre-wrap;max-width:480px;font-size:.9em}.better{color:#0a7d22}.worse{color:#b00020}
.verdict{font-size:1.1em;font-weight:600}.warning{color:#b00020;font-weight:600}
.legend dt{font-weight:600;margin-top:.4em}.legend dd{margin-left:1.5em}"""


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def loss_plot(metrics: dict) -> str | None:
    curves = loss_curves(metrics)
    if not any(curves.values()):
        return None
    fig, ax = new_figure()
    for name, style in (("train_loss", "-"), ("val_loss", "--o")):
        if curves[name]:
            xs, ys = zip(*curves[name], strict=True)
            ax.plot(xs, ys, style, label=name.replace("_", " "))
    ax.set_xlabel("iteration")
    integer_ticks(ax.xaxis)
    ax.set_ylabel("loss")
    ax.legend()
    return png_data_uri(fig)


def dataset_lengths(db: Path) -> dict[str, list[int]]:
    """Word counts of questions and answers of the most downstream Q&A table in data.duckdb."""
    if not db.is_file():
        return {}
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_columns() WHERE column_name = 'answer'").fetchall()
        }
        table = next((t for t in ("split", "augment", "curate", "answers") if t in tables), None)
        if table is None:
            return {}
        rows = con.execute(
            f'SELECT question, answer FROM "{table}" WHERE answer IS NOT NULL'
            + (" AND status = 'ok'" if _has_status(con, table) else "")
        ).fetchall()
    return {
        "question words": [len((q or "").split()) for q, _ in rows],
        "answer words": [len((a or "").split()) for _, a in rows],
    }


def _has_status(con: Any, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = 'status'", [table]
        ).fetchone()[0]
    )


def histogram_plot(lengths: dict[str, list[int]]) -> str | None:
    fig = histograms({f"{label} (n={len(values)})": values for label, values in lengths.items()})
    return png_data_uri(fig) if fig is not None else None


def verdict_section(run: RunData) -> str:
    """Did the tune help: the verdict line, its warning, and which adapter training kept."""
    found = documents_verdict(run.eval, run.metrics)
    if found is None:
        return ""
    out = f'<p class="verdict">{html.escape(found.line)}</p>'
    if found.warning:
        out += f'<p class="warning">Warning: {html.escape(found.warning)}</p>'
    return out + "".join(f"<p>{html.escape(note)}</p>" for note in found.notes)


def steps_section(run: RunData) -> str:
    rows = [
        [html.escape(name), html.escape(str(s.get("status", ""))), num(s.get("rows")), num(s.get("seconds"))]
        for name, s in run.manifest.get("steps", {}).items()
    ]
    return "<h2>Steps</h2>" + table(["step", "status", "rows", "seconds"], rows)


def render_html(run: RunData, lengths: dict[str, list[int]], recipe_text: str) -> str:
    parts = [
        f"<h1>Run {html.escape(run.run_id)} — {html.escape(str(run.manifest.get('recipe', '')))}</h1>",
        f"<p>status {html.escape(str(run.manifest.get('status', '?')))}, created "
        f"{html.escape(str(run.manifest.get('created', '')))}</p>",
        verdict_section(run),
        steps_section(run),
    ]
    hist = histogram_plot(lengths)
    parts.append(
        "<h2>Dataset</h2>"
        + _dataset_counts(run.metrics)
        + (img(hist, "dataset length histograms") if hist else "<p>No Q&amp;A data.</p>")
    )
    parts += [coverage_section(run.path), left_out_section(run.path), llm_section(run.metrics, run.resolved)]
    losses = loss_plot(run.metrics)
    parts.append("<h2>Training</h2>" + (img(losses, "loss curves") if losses else "<p>No training in this run.</p>"))
    # eval.json, else what metrics.json keeps of it (summary and settings) when eval.json is gone
    evaluate = run.metrics.get("evaluate") or {}
    ev = run.eval or {"summary": evaluate, "sampling": evaluate.get("sampling") or {}}
    parts += [settings_section(ev), summary_section(ev, evaluate), probes_section(ev), answers_section(ev)]
    parts.append(f"<h2>Recipe</h2><pre>{html.escape(recipe_text)}</pre>")
    title = html.escape(f"recipe run {run.run_id}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _dataset_counts(metrics: dict) -> str:
    """Counts the data steps put into their metrics (curate/augment/split), as one table."""
    rows = [
        [html.escape(step), html.escape(k), num(v)]
        for step in ("curate", "augment", "split")
        for k, v in (metrics.get(step) or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return table(["step", "count", "value"], rows) if rows else ""


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write report.html for any run folder (default: into the folder) and return its path."""
    run = load_run(run_dir)
    out = out or run_dir / "report.html"
    page = render_html(run, dataset_lengths(run_dir / "data.duckdb"), recipe_text(run_dir, run.resolved))
    # Write beside and rename: in folders built from older stores report.html is a hard link into
    # the artifact cache (evaluate used to write one), and writing through it would change that file.
    # The rename also means a reader never sees half a page.
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
