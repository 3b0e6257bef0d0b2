"""report.html's data sections: coverage per video, rows left out with their reasons, LLM calls.

Each reads the run folder (data.duckdb, metrics.json) and returns HTML; each says so in words
when the run has nothing to show, so a run that stopped early still gets a readable page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.inspect.html_parts import count, esc, num, table
from engine.inspect.show import COVERAGE_STAGES, coverage_counts, failed_items, item_problems, video_coverage

SHOWN_ROWS = 200  # rows left out listed per step; the rest are counted (data.duckdb has them all)
SHOWN_VIDEOS = 1000
LEFT_OUT = ("failed", "skipped", "dropped")


def coverage_section(run_dir: Path) -> str:
    videos = video_coverage(run_dir)
    if not videos:
        return "<h2>Coverage per video</h2><p>No source table in this run.</p>"
    stages = [stage for stage, _, _ in COVERAGE_STAGES if stage in videos[0]]
    counts = coverage_counts(videos)
    lead = ""
    if counts:
        lead = (
            f"<p>{counts['with_rows']} of {counts['videos']} source videos have {esc(counts['stage'])} rows; "
            f"{_videos(len(counts['without']))} none{' (marked red)' if counts['without'] else ''}.</p>"
        )
    rows = []
    for v in videos[:SHOWN_VIDEOS]:
        empty = counts is not None and not v.get(counts["stage"])
        status = esc(v.get("status")) + (f": {esc(v['reason'])}" if v.get("reason") else "")
        cells = [esc(v["video_id"]), esc(v.get("title")), status] + [count(v.get(s)) for s in stages]
        rows.append([f'<span class="worse">{c}</span>' if empty else c for c in cells])
    more = f"<p>... and {len(videos) - SHOWN_VIDEOS} more videos.</p>" if len(videos) > SHOWN_VIDEOS else ""
    legend = (
        "<p>Rows with status ok at each stage: transcript chunks, questions (LLM pass 1), answers (pass 2), "
        "kept by curate, and rows in each split (augmented rows included). A video with 0 questions appears "
        "in no later table: it is counted here from the sources table.</p>"
    )
    headers = ["video", "title", "source status", *stages]
    return "<h2>Coverage per video</h2>" + lead + legend + table(headers, rows) + more


def _videos(n: int) -> str:
    return f"{n} has" if n == 1 else f"{n} have"


def left_out_section(run_dir: Path) -> str:
    """Every row a step did not pass on (failed, skipped, dropped), counted by reason per step as
    `recipe show` prints them, then listed with the full reason."""
    problems = item_problems(run_dir)
    if not problems:
        return "<h2>Rows left out</h2><p>Every row of every step is ok.</p>"
    listed = failed_items(run_dir, LEFT_OUT)
    parts = ["<h2>Rows left out</h2><p>Rows each step failed, skipped or dropped, with the reason.</p>"]
    for step, reasons in problems.items():
        parts.append(f"<h3>{esc(step)}</h3>")
        parts.append(table(["status: reason", "rows"], [[esc(r), count(n)] for r, n in reasons.items()]))
        items = listed.get(step, [])
        if items:
            rows = [
                [esc(it["status"]), esc(it["name"]), esc(it.get("question", "")), esc(it["reason"] or "no reason")]
                for it in items[:SHOWN_ROWS]
            ]
            parts.append(table(["status", "row", "question", "reason"], rows))
            if len(items) > SHOWN_ROWS:
                parts.append(f"<p>... and {len(items) - SHOWN_ROWS} more (the `{esc(step)}` table of data.duckdb).</p>")
    return "\n".join(parts)


LLM_COLUMNS = (
    ("calls", "calls made"),
    ("cached", "from cache"),
    ("failures", "failed"),
    ("retries", "retries"),
    ("reasks", "re-asks"),
    ("prompt_tokens", "prompt tokens"),
    ("completion_tokens", "completion tokens"),
    ("cost", "cost (USD)"),
    ("cached_tokens", "tokens saved by cache"),
    ("cached_cost", "cost saved by cache (USD)"),
)


def llm_section(metrics: dict[str, Any], resolved: dict[str, Any]) -> str:
    """LLM calls, tokens and cost per step (each step's pass), from the metrics the client counts;
    the model from the resolved recipe where older metrics did not name it."""
    used = {step: m["llm"] for step, m in metrics.items() if isinstance(m, dict) and isinstance(m.get("llm"), dict)}
    if not used:
        return "<h2>LLM calls</h2><p>No LLM calls in this run.</p>"
    rows, totals = [], dict.fromkeys((k for k, _ in LLM_COLUMNS), 0.0)
    for step, llm in used.items():
        passes = _passes(step)
        cells = [esc(step), esc(", ".join(passes)), esc(llm.get("model") or _model(resolved, passes))]
        for key, _ in LLM_COLUMNS:
            value = llm.get(key)
            if isinstance(value, (int, float)):
                totals[key] += value
            cells.append(_money(value) if key.endswith("cost") else count(value))
        rows.append(cells)
    rows.append(
        ["<b>total</b>", "", ""]
        + [f"<b>{_money(v) if k.endswith('cost') else count(int(v))}</b>" for k, v in totals.items()]
    )
    note = (
        "<p>Tokens as the provider reports them (the local mlx provider counts them with the model's tokenizer). "
        "Cost is litellm's price for the model: 0 for local models and for models it has no price for. "
        "A step that was cached in this run shows the calls of the run that computed it; replies taken from the "
        "response cache cost nothing now, and the last two columns say what they cost when first made.</p>"
    )
    headers = ["step", "pass", "model", *(label for _, label in LLM_COLUMNS)]
    return "<h2>LLM calls</h2>" + table(headers, rows) + note


def _passes(step: str) -> tuple[str, ...]:
    from engine.steps import load_step

    try:
        return tuple(getattr(load_step(step), "LLM_PASSES", ()))
    except KeyError:  # a step this version no longer has
        return ()


def _model(resolved: dict[str, Any], passes: tuple[str, ...]) -> str:
    found = resolved.get("llm")
    llm: dict[str, Any] = found if isinstance(found, dict) else {}
    for name in passes:
        override = (llm.get("passes") or {}).get(name) or {}
        if isinstance(override, dict) and override.get("model"):
            return str(override["model"])
    return str(llm.get("model") or "—")


def _money(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value:.4f}" if value >= 0.01 or value == 0 else num(float(value))
