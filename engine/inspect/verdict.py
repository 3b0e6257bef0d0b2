"""Did the tune help? One line from the evaluate step's base-vs-tuned scores.

Three questions, each answered only when the run has the scores for it (older runs and runs
without probes lack some): held-out loss lower or higher than the base model's, the answers'
format closer to or further from the training answers' (format_gap, lower is closer), and
forgetting probes kept or lost. A tune that made held-out loss worse gets a warning with the
usual remedies, since that is the case a user would otherwise ship without noticing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.inspect.folder import read_json

# Differences below these are "unchanged": held-out loss and format_gap are printed to 2 decimals.
LOSS_TOLERANCE = 0.005
GAP_TOLERANCE = 0.005
WORSE_WARNING = (
    "the tune made held-out loss WORSE than the base model: try fewer iters, a lower learning rate, or more data"
)


@dataclass(frozen=True)
class Verdict:
    parts: list[str]  # "held-out loss 1.98 -> 2.05 (worse)", "format closer (0.33 -> 0.09)", ...
    short: list[str]  # the same, terse, for a column of `recipe runs`
    loss_worse: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. which adapter training kept

    @property
    def line(self) -> str:
        return "verdict: " + ", ".join(self.parts)

    @property
    def warning(self) -> str | None:
        return WORSE_WARNING if self.loss_worse else None

    @property
    def short_line(self) -> str:
        return ", ".join(self.short)


def _number(summary: dict, key: str) -> float | None:
    value = summary.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pair(summary: dict, name: str) -> tuple[float, float] | None:
    base, tuned = _number(summary, f"base_{name}"), _number(summary, f"tuned_{name}")
    return (base, tuned) if base is not None and tuned is not None else None


def _two(a: float, b: float, unchanged: bool = False) -> str:
    """Both numbers at the fewest decimals (2 to 4) that tell them apart; an "unchanged" pair at 3
    when 2 would round them apart (1.98 -> 1.99 would read as a change)."""
    if a == b:
        digits = 2
    else:
        digits = next((d for d in (2, 3) if round(a, d) != round(b, d)), 4)
        digits = max(digits, 3) if unchanged else digits
    return f"{a:.{digits}f} -> {b:.{digits}f}"


def _loss_part(summary: dict) -> tuple[str, str, bool] | None:
    pair = _pair(summary, "loss")
    if pair is None:
        return None
    base, tuned = pair
    if abs(tuned - base) < LOSS_TOLERANCE:
        word, short = "unchanged", "loss same"
    elif tuned < base:
        word, short = "better", "loss better"
    else:
        word, short = "worse", "loss WORSE"
    numbers = _two(base, tuned, word == "unchanged")
    return f"held-out loss {numbers} ({word})", f"{short} ({numbers.replace(' ', '')})", word == "worse"


def _format_part(summary: dict) -> tuple[str, str] | None:
    pair = _pair(summary, "format_gap")
    if pair is None:
        return None
    base, tuned = pair
    if abs(tuned - base) < GAP_TOLERANCE:
        word = "unchanged"
    else:
        word = "closer" if tuned < base else "further"
    return f"format {word} ({_two(base, tuned, word == 'unchanged')})", f"format {word}"


def _probes_part(summary: dict) -> tuple[str, str] | None:
    base, tuned = _number(summary, "base_probes_passed"), _number(summary, "tuned_probes_passed")
    if tuned is None:
        return None
    total = _number(summary, "probes_total")
    of = f"/{int(total)}" if total else ""
    if base is None or tuned == base:
        text = f"probes kept {int(tuned)}{of}" if base is not None else f"probes passed {int(tuned)}{of}"
    elif tuned < base:
        text = f"probes lost {int(base - tuned)} ({int(base)}{of} -> {int(tuned)}{of})"
    else:
        text = f"probes gained {int(tuned - base)} ({int(base)}{of} -> {int(tuned)}{of})"
    return text, f"probes {int(tuned)}{of}"


def verdict(summary: dict[str, Any], train: dict[str, Any] | None = None) -> Verdict | None:
    """The verdict of an evaluate summary (eval.json's `summary`); None when it has no base-vs-tuned
    score at all. `train` (the train step's metrics) adds which adapter was kept."""
    parts, short, worse = [], [], False
    loss = _loss_part(summary)
    if loss:
        parts.append(loss[0])
        short.append(loss[1])
        worse = loss[2]
    for found in (_format_part(summary), _probes_part(summary)):
        if found:
            parts.append(found[0])
            short.append(found[1])
    if not parts:
        return None
    return Verdict(parts, short, worse, _kept_notes(train or {}))


def _kept_notes(train: dict[str, Any]) -> list[str]:
    kept, kept_loss, final_loss = train.get("kept_iteration"), train.get("kept_val_loss"), train.get("final_val_loss")
    if not isinstance(kept, int) or not isinstance(kept_loss, (int, float)):
        return []
    last = train.get("final_iteration")
    of = f" of {last}" if isinstance(last, int) else ""
    final = f", final {final_loss:.2f}" if isinstance(final_loss, (int, float)) else ""
    stopped = " (stopped early)" if train.get("stopped_early") else ""
    return [f"kept the adapter of iteration {kept}{of}{stopped}: validation loss {kept_loss:.2f}{final}"]


def _section(doc: Any, key: str) -> dict[str, Any]:
    found = doc.get(key) if isinstance(doc, dict) else None
    return found if isinstance(found, dict) else {}


def eval_scores(eval_doc: Any, metrics: Any) -> dict[str, Any]:
    """The evaluate step's flat summary: eval.json's, else the copy in metrics.json.
    A missing, half-written or odd-shaped file gives {} (a run that stopped early)."""
    return _section(eval_doc, "summary") or _section(metrics, "evaluate")


def documents_verdict(eval_doc: Any, metrics: Any) -> Verdict | None:
    """The verdict from a run folder's eval.json and metrics.json contents (either may be {})."""
    return verdict(eval_scores(eval_doc, metrics), _section(metrics, "train"))


def run_verdict(run_dir: Path) -> Verdict | None:
    """The verdict of one run folder; None when it has no evaluation (yet)."""
    return documents_verdict(read_json(run_dir / "eval.json"), read_json(run_dir / "metrics.json"))
