"""Dataset statistics for metrics.json and `recipe show`, plus PNG histograms.

Lengths are counted in characters and whitespace tokens (cheap, tokenizer-independent; a
subword tokenizer gives roughly 1.3x the whitespace count for English).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.data import plots
from engine.data.quality import FEATURES, has_feature


def distribution(values: Sequence[float]) -> dict[str, float]:
    """min / p10 / median / mean / p90 / max of a list of numbers (empty: {})."""
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))])

    return {
        "min": float(ordered[0]),
        "p10": pct(0.1),
        "median": pct(0.5),
        "mean": round(sum(ordered) / len(ordered), 2),
        "p90": pct(0.9),
        "max": float(ordered[-1]),
    }


def reasons(rows: Iterable[dict]) -> dict[str, int]:
    """Counts of non-ok rows by reason kind ('too short (54 < 100)' -> 'too short')."""
    counts = Counter(
        (r.get("reason") or "unknown").split(" (")[0].split(":")[0] for r in rows if r.get("status") != "ok"
    )
    return dict(counts.most_common())


def lengths(rows: Sequence[dict]) -> dict[str, Any]:
    return {
        f"{field}_{unit}": distribution([_size(r.get(field) or "", unit) for r in rows])
        for field in ("question", "answer")
        for unit in ("chars", "tokens")
    }


def _size(text: str, unit: str) -> int:
    return len(text) if unit == "chars" else len(text.split())


def formatting(rows: Sequence[dict]) -> dict[str, float]:
    """Share of answers showing each formatting feature."""
    if not rows:
        return {f: 0.0 for f in FEATURES}
    return {f: round(sum(has_feature(r.get("answer") or "", f) for r in rows) / len(rows), 3) for f in FEATURES}


def tags(rows: Sequence[dict], top: int = 20) -> dict[str, int]:
    counts = Counter(t for r in rows for t in (r.get("tags") or []))
    return dict(counts.most_common(top))


def coverage(all_rows: Sequence[dict], kept: Sequence[dict]) -> dict[str, Any]:
    """How many videos contribute rows, and how evenly (rows per video)."""
    per_video = Counter(r["video_id"] for r in kept)
    videos = {r["video_id"] for r in all_rows}
    return {
        "videos": len(videos),
        "videos_with_rows": len(per_video),
        "videos_without_rows": sorted(videos - set(per_video))[:50],
        "rows_per_video": distribution(list(per_video.values())),
    }


def dataset_stats(all_rows: Sequence[dict], kept: Sequence[dict]) -> dict[str, Any]:
    """Everything about one stage's output: counts, reasons, lengths, formatting, tags, coverage."""
    return {
        "rows": len(all_rows),
        "kept": len(kept),
        "dropped": len(all_rows) - len(kept),
        "reasons": reasons(all_rows),
        "lengths": lengths(kept),
        "formatting": formatting(kept),
        "tags": tags(kept),
        "coverage": coverage(all_rows, kept),
    }


def histograms(path: Path, title: str, series: dict[str, Sequence[float]], bins: int = 30) -> Path | None:
    """One PNG with a histogram per series (side by side); None if there is nothing to plot."""
    fig = plots.histograms(series, title, bins)
    return plots.save_png(fig, path) if fig is not None else None


def length_histograms(path: Path, title: str, rows: Sequence[dict]) -> Path | None:
    return histograms(
        path,
        title,
        {
            "question tokens": [len((r.get("question") or "").split()) for r in rows],
            "answer chars": [len(r.get("answer") or "") for r in rows],
            "answer tokens": [len((r.get("answer") or "").split()) for r in rows],
        },
    )
