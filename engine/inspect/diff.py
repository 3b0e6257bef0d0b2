"""`recipe diff RUN_A RUN_B`: what changed between two runs, and what it did to the numbers.

Recipe differences are flattened keys (only the ones that differ); metrics are shown side by side
with deltas; the dataset difference comes from ATTACHing both runs' data.duckdb in one DuckDB
session; eval answers are paired by question. Every part tolerates a run that stopped early.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from engine.data.plots import new_figure, save_png
from engine.data.sampling import describe, main_setting, recorded_settings
from engine.data.scores import json_safe
from engine.inspect.folder import RunData, load_run, loss_curves
from engine.recipe.load import dotted

# Tables whose `question` column defines "the dataset", most downstream first.
DATASET_TABLES = ("split", "augment", "curate", "answers", "questions")
# Train-step numbers worth a row (the chosen learning rate after a sweep, speed, size).
TRAIN_KEYS = (
    "learning_rate",
    "train_examples",
    "valid_examples",
    "trained_tokens",
    "tokens_per_second",
    "peak_memory_gb",
    "wall_time_s",
)


def flatten(value: Any, path: tuple = ()) -> dict[str, Any]:
    """Nested dicts/lists -> {"train.lora.rank": 8, "sources[0].path": "demo"}."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, path + (str(key),)).items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, path + (i,)).items()}
    return {dotted(path): value}


def recipe_changes(a: dict, b: dict) -> list[dict[str, Any]]:
    """Keys whose value differs (absent on one side shows as None)."""
    fa, fb = flatten(a), flatten(b)
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def headline_metrics(run: RunData) -> dict[str, Any]:
    """The numbers worth comparing: losses, eval summary, dataset counts."""
    curves = loss_curves(run.metrics)
    train = run.metrics.get("train") or {}
    out: dict[str, Any] = {
        "final_train_loss": curves["train_loss"][-1][1] if curves["train_loss"] else None,
        "final_val_loss": curves["val_loss"][-1][1] if curves["val_loss"] else None,
        "best_val_loss": train.get("best_val_loss"),
    }
    out.update({f"train.{k}": train[k] for k in TRAIN_KEYS if _number(train.get(k))})
    for name, step in run.manifest.get("steps", {}).items():
        if isinstance(step.get("rows"), int):
            out[f"rows.{name}"] = step["rows"]
    summary = run.eval.get("summary") or run.metrics.get("evaluate") or {}
    out.update({f"eval.{k}": v for k, v in summary.items() if _number(v)})
    return out


def _number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key in list(dict.fromkeys([*a, *b])):
        va, vb = a.get(key), b.get(key)
        if va is None and vb is None:
            continue
        delta = vb - va if _number(va) and _number(vb) else None
        rows.append({"metric": key, "a": va, "b": vb, "delta": delta})
    return rows


def dataset_diff(db_a: Path, db_b: Path, limit: int = 20) -> dict[str, Any]:
    """Questions only in A (removed) / only in B (added), from the most downstream shared table."""
    if not (db_a.is_file() and db_b.is_file()):
        return {"table": None, "note": "a run has no data.duckdb"}
    import duckdb

    con = duckdb.connect()
    try:
        for alias, db in (("a", db_a), ("b", db_b)):
            quoted = str(db).replace("'", "''")  # a quote in the path must not end the SQL literal
            con.execute(f"ATTACH '{quoted}' AS {alias} (READ_ONLY)")
        table = _shared_question_table(con)
        if table is None:
            return {"table": None, "note": "no shared table with a question column"}
        return _question_sets(con, table, limit)
    finally:
        con.close()


def _shared_question_table(con: Any) -> str | None:
    cols = con.execute(
        "SELECT database_name, table_name, column_name FROM duckdb_columns() "
        "WHERE database_name IN ('a', 'b') AND column_name = 'question'"
    ).fetchall()
    have = {(db, t) for db, t, _ in cols}
    return next((t for t in DATASET_TABLES if ("a", t) in have and ("b", t) in have), None)


def _question_sets(con: Any, table: str, limit: int) -> dict[str, Any]:
    ok = "WHERE question IS NOT NULL" + _status_filter(con, table)
    sql = (
        f'SELECT DISTINCT question FROM {{x}}."{table}" {ok} EXCEPT '
        f'SELECT DISTINCT question FROM {{y}}."{table}" {ok} ORDER BY 1'
    )
    removed = [r[0] for r in con.execute(sql.format(x="a", y="b")).fetchall()]
    added = [r[0] for r in con.execute(sql.format(x="b", y="a")).fetchall()]
    count = f'SELECT count(DISTINCT question) FROM {{x}}."{table}" {ok}'
    return {
        "table": table,
        "a_questions": con.execute(count.format(x="a")).fetchone()[0],
        "b_questions": con.execute(count.format(x="b")).fetchone()[0],
        "added_count": len(added),
        "removed_count": len(removed),
        "added": added[:limit],
        "removed": removed[:limit],
    }


def _status_filter(con: Any, table: str) -> str:
    has = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE database_name IN ('a','b') "
        "AND table_name = ? AND column_name = 'status'",
        [table],
    ).fetchone()[0]
    return " AND status = 'ok'" if has == 2 else ""


def eval_pairs(a: dict, b: dict) -> list[dict[str, Any]]:
    """Tuned answers of both runs, in each run's main setting, for the questions both runs asked."""

    def by_question(ev: dict) -> dict[str, str]:
        setting = main_setting(ev)
        return {
            it["question"]: (it.get("answers", {}).get(setting) or {}).get("tuned", "")
            for it in ev.get("items", [])
            if "question" in it
        }

    qa, qb = by_question(a), by_question(b)
    return [{"question": q, "a": qa[q], "b": qb[q]} for q in qa if q in qb]


# What makes two settings the same (a rebuilt record of an older run equals a recorded one).
SAMPLING_PARAMETERS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "repetition_context_size",
    "seed",
    "max_tokens",
)


def sampling_rows(a: dict, b: dict) -> list[dict[str, Any]]:
    """Each run's setting per score suffix, with its parameters: the eval numbers of a suffix
    compare like with like only where both runs used the same parameters."""
    by_suffix: dict[str, dict[str, Any]] = {}
    compared: dict[tuple[str, str], Any] = {}
    for side, doc in (("a", a), ("b", b)):
        for key, record in recorded_settings(doc).items():
            suffix = record.get("summary_suffix", "")
            row = by_suffix.setdefault(suffix, {"a": None, "b": None})
            row[side] = {"setting": record.get("label", key), "parameters": describe(record)}
            compared[suffix, side] = (record.get("label", key), *(record.get(p) for p in SAMPLING_PARAMETERS))
    return [
        {"suffix": suffix, **row, "same": compared.get((suffix, "a")) == compared.get((suffix, "b"))}
        for suffix, row in by_suffix.items()
    ]


@dataclass
class RunDiff:
    a: str
    b: str
    recipe: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    dataset: dict[str, Any] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)
    sampling: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def diff_runs(dir_a: Path, dir_b: Path) -> RunDiff:
    a, b = load_run(dir_a), load_run(dir_b)
    return RunDiff(
        a.run_id,
        b.run_id,
        recipe_changes(a.resolved, b.resolved),
        metric_rows(headline_metrics(a), headline_metrics(b)),
        dataset_diff(dir_a / "data.duckdb", dir_b / "data.duckdb"),
        eval_pairs(a.eval, b.eval),
        sampling_rows(a.eval, b.eval),
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)


def _delta(v: Any) -> str:
    return "" if v is None else f"{v:+.4g}"


def render_markdown(d: RunDiff) -> str:
    lines = [f"# diff {d.a} → {d.b}", "", "## Recipe", ""]
    lines += (
        ["| key | A | B |", "|---|---|---|"] + [f"| `{r['key']}` | {_fmt(r['a'])} | {_fmt(r['b'])} |" for r in d.recipe]
        if d.recipe
        else ["(same recipe)"]
    )
    lines += ["", "## Metrics", "", "| metric | A | B | Δ |", "|---|---|---|---|"]
    lines += [f"| {r['metric']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_delta(r['delta'])} |" for r in d.metrics]
    lines += ["", "## Dataset", ""] + _dataset_lines(d.dataset, "- ")
    if d.sampling:
        lines += ["", "## Eval settings", "", "| scores | A | B |", "|---|---|---|"]
        lines += [f"| {_suffix(r['suffix'])} | {_setting(r['a'])} | {_setting(r['b'])} |" for r in d.sampling]
    if d.answers:
        lines += ["", f"## Eval answers (tuned, {_main_settings(d)})"]
        for pair in d.answers:
            lines += [
                "",
                f"**Q: {pair['question']}**",
                "",
                f"- A: {_one_line(pair['a'])}",
                f"- B: {_one_line(pair['b'])}",
            ]
    return "\n".join(lines) + "\n"


def _dataset_lines(ds: dict[str, Any], bullet: str) -> list[str]:
    if not ds.get("table"):
        return [ds.get("note", "no dataset")]
    lines = [
        f"table `{ds['table']}`: {ds['a_questions']} → {ds['b_questions']} questions "
        f"(+{ds['added_count']} added, -{ds['removed_count']} removed)"
    ]
    lines += [f"{bullet}+ {q}" for q in ds["added"]] + [f"{bullet}- {q}" for q in ds["removed"]]
    return lines


def _suffix(suffix: str) -> str:
    return f"*{suffix}" if suffix else "unsuffixed (main)"


def _setting(side: dict[str, Any] | None) -> str:
    return "—" if side is None else f"{side['setting']} ({side['parameters']})"


def _main_settings(d: RunDiff) -> str:
    main = next((r for r in d.sampling if r["suffix"] == ""), None)
    if main is None:
        return "main setting"
    a, b = ((main[s] or {}).get("setting", "—") for s in ("a", "b"))
    return a if a == b else f"A {a}, B {b}"


def _one_line(text: str, width: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_text(d: RunDiff) -> str:
    lines = [f"diff {d.a} -> {d.b}", "", "recipe:"]
    lines += [f"  {r['key']}: {_fmt(r['a'])} -> {_fmt(r['b'])}" for r in d.recipe] or ["  (same recipe)"]
    lines += ["", f"  {'metric':<34} {'A':>12} {'B':>12} {'delta':>10}"]
    lines += [f"  {r['metric']:<34} {_fmt(r['a']):>12} {_fmt(r['b']):>12} {_delta(r['delta']):>10}" for r in d.metrics]
    lines += ["", "dataset:"] + ["  " + x for x in _dataset_lines(d.dataset, "  ")]
    if d.sampling:
        lines += ["", "eval settings (scores: A -> B):"]
        for r in d.sampling:
            same = " (same)" if r["same"] else ""
            lines.append(f"  {_suffix(r['suffix'])}: {_setting(r['a'])} -> {_setting(r['b'])}{same}")
    if d.answers:
        lines += ["", f"answers (tuned, {_main_settings(d)}):"]
    for pair in d.answers:
        lines += [
            "",
            f"Q: {pair['question']}",
            f"  A: {_one_line(pair['a'], 200)}",
            f"  B: {_one_line(pair['b'], 200)}",
        ]
    return "\n".join(lines)


def plot_losses(runs: list[tuple[str, dict]], out: Path) -> Path:
    """Overlay the loss curves of several runs (train solid, val dashed) in one PNG."""
    fig, ax = new_figure()
    for i, (label, metrics) in enumerate(runs):
        curves, color = loss_curves(metrics), f"C{i}"
        for name, style in (("train_loss", "-"), ("val_loss", "--")):
            if curves[name]:
                xs, ys = zip(*curves[name], strict=True)
                ax.plot(
                    xs,
                    ys,
                    style,
                    color=color,
                    marker="o" if name == "val_loss" else None,
                    label=f"{label} {name.split('_')[0]}",
                )
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    return save_png(fig, out)
