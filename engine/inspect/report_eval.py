"""report.html's evaluation sections: sampling settings, scores with their legend, probes, answers.

Settings are shown by name and parameters for every eval.json: those written since evaluate v4
record them; older ones ("greedy", "sampled") are rebuilt from the eval settings they recorded,
so an old "greedy" shows as what it was (greedy+rep1.1).
"""

from __future__ import annotations

from typing import Any

from engine.data.sampling import describe, recorded_settings
from engine.inspect.html_parts import esc, num, table

# Scores where a lower value is better (colouring the tuned column).
LOWER_IS_BETTER = ("loss", "perplexity", "format_gap", "loop_rate", "banned_rate")
# Scores measured without sampling (on fixed tokens), and those of the main setting only.
TEACHER_FORCED = ("loss", "perplexity")

LEGEND = """<dl class="legend">
<dt>loss, perplexity</dt><dd>Held-out loss (and e<sup>loss</sup>) on the answers of the test rows (else
valid): the same tokens for both models, read without sampling. Lower is better.</dd>
<dt>format_gap</dt><dd>How differently the model formats than its training answers: for paragraphs,
bold and lists, the share of its answers using the feature minus the share of training answers using it,
as an absolute value, averaged over the three. 0 means it formats as often as the training data; lower is
better.</dd>
<dt>length_ratio</dt><dd>Median words of the model's answers divided by the median words of the training
answers. 1.0 is on target; closer to 1 is better (above 1: longer than the creator, below: shorter).</dd>
<dt>loop_rate</dt><dd>Share of answers that loop (a sentence or a phrase repeated). Lower is better.</dd>
<dt>banned_rate</dt><dd>Share of answers with a banned phrase (<code>filters.banned_phrases</code>, e.g.
"in this video"). Lower is better.</dd>
<dt>probes_passed</dt><dd>General-ability probes passed (greeting, arithmetic, a capital, or the recipe's
own), in the main setting. Higher is better: fewer than the base model's means the tune made it forget.</dd>
<dt>colours</dt><dd>A tuned value is <span class="better">green</span> when it is better than the base
model's by that score's direction, <span class="worse">red</span> when worse, plain when equal. The colour
gives the direction only: with a handful of prompts a small difference may be noise.</dd>
</dl>"""


def settings_section(ev: dict) -> str:
    records = recorded_settings(ev)
    if not records:
        return ""
    rows = []
    for key, record in records.items():
        label = record.get("label", key)
        renamed = f" (called “{esc(key)}” in this eval.json)" if label != key else ""
        suffix = record.get("summary_suffix") or ""
        rows.append([f"<b>{esc(label)}</b>{renamed}", esc(f"*{suffix}" if suffix else "(none)"), esc(describe(record))])
    lead = (
        "<p>Both models answer every prompt in each setting. A setting is named by what it is: "
        "<code>greedy</code> is plain greedy decoding, <code>+rep1.1</code> adds a repetition penalty of 1.1, "
        "<code>sampled-t0.7</code> samples at temperature 0.7 (seeded). The first setting is the main one: "
        "probes, the judge and the verdict read its answers.</p>"
    )
    return "<h2>Sampling settings</h2>" + lead + table(["setting", "score suffix", "parameters"], rows)


def summary_section(ev: dict, metrics_summary: dict) -> str:
    summary = ev.get("summary") or metrics_summary or {}
    names = sorted({k.split("_", 1)[1] for k in summary if k.startswith(("base_", "tuned_"))})
    if not names:
        return "<h2>Evaluation</h2><p>No evaluation in this run.</p>"
    records = recorded_settings(ev)
    rows = []
    for name in names:
        score, setting = _score_setting(name, records)
        base, tuned = summary.get(f"base_{name}"), summary.get(f"tuned_{name}")
        rows.append([esc(score), esc(setting), num(base), marked(name, base, tuned)])
    extra = {k: v for k, v in summary.items() if not k.startswith(("base_", "tuned_", "setting"))}
    extra_html = "".join(f"<li>{esc(k)}: {num(v)}</li>" for k, v in extra.items())
    headers = ["score", "setting", "base", "tuned"]
    return "<h2>Evaluation: base vs tuned</h2>" + table(headers, rows) + f"<ul>{extra_html}</ul>" + LEGEND


def _score_setting(name: str, records: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """'format_gap_sampled' -> ('format_gap', 'sampled-t0.7+rep1.1')."""
    by_suffix = {r.get("summary_suffix", ""): r.get("label", k) for k, r in records.items()}
    for suffix in sorted((s for s in by_suffix if s), key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)], by_suffix[suffix]
    if name in TEACHER_FORCED:
        return name, "no sampling (fixed tokens)"
    return name, by_suffix.get("", "—")


def marked(name: str, base: Any, tuned: Any) -> str:
    if not (isinstance(base, (int, float)) and isinstance(tuned, (int, float))) or base == tuned:
        return num(tuned)
    if name.startswith("length_ratio"):  # 1.0 is on target: closer to it is better
        better = abs(tuned - 1) < abs(base - 1)
    else:
        lower = any(name.endswith(s) or name.startswith(s) for s in LOWER_IS_BETTER)
        better = (tuned < base) if lower else (tuned > base)
    return f'<span class="{"better" if better else "worse"}">{num(tuned)}</span>'


def probes_section(ev: dict) -> str:
    """Each probe: its prompt, the words its answer must include, and whether each model passed."""
    probes = [it for it in ev.get("items", []) if isinstance(it.get("passed"), dict)]
    if not probes:
        return _older_probes(ev)
    main = next(iter(recorded_settings(ev).values()), {}).get("label", "the main setting")
    rows = []
    for it in probes:
        words = " and ".join(w if isinstance(w, str) else " or ".join(map(str, w)) for w in it.get("must_include", []))
        rows.append([esc(it.get("question")), esc(words), *(_pass_cell(it, role) for role in ("base", "tuned"))])
    lead = (
        f"<p>Answers of {esc(main)}. A probe passes when its answer is not empty, does not loop, and has every "
        "entry (whole words, any case; “a or b”: either).</p>"
    )
    return "<h2>Probes</h2>" + lead + table(["probe", "must include", "base", "tuned"], rows)


def _older_probes(ev: dict) -> str:
    """eval.json files that kept pass/fail only under `probes` (no per-item record)."""
    probes = ev.get("probes") or {}
    by_role = {
        role: {p.get("prompt"): p.get("passed") for p in (probes.get(role) or {}).get("items", [])}
        for role in ("base", "tuned")
    }
    prompts = list(dict.fromkeys([*by_role["base"], *by_role["tuned"]]))
    if not prompts:
        return ""
    rows = [[esc(p), *(_verdict(by_role[r].get(p)) for r in ("base", "tuned"))] for p in prompts]
    return "<h2>Probes</h2>" + table(["probe", "base", "tuned"], rows)


def _pass_cell(item: dict, role: str) -> str:
    missing = (item.get("missing") or {}).get(role) or []
    cell = _verdict((item.get("passed") or {}).get(role))
    return cell + (f"<br>missing: {esc(', '.join(map(str, missing)))}" if missing else "")


def _verdict(passed: Any) -> str:
    if passed is None:
        return "—"
    return f'<span class="{"better" if passed else "worse"}">{"pass" if passed else "fail"}</span>'


def answers_section(ev: dict) -> str:
    """Every answer side by side, by setting name; the reference column holds the expected answer
    (or the held-out row's), and a probe's row says whether each model passed it."""
    labels = {k: r.get("label", k) for k, r in recorded_settings(ev).items()}
    rows = []
    for it in ev.get("items", []):
        for setting, pair in (it.get("answers") or {}).items():
            rows.append(
                [
                    esc(it.get("source", "")),
                    esc(it.get("question", "")),
                    esc(labels.get(setting, setting)),
                    f'<div class="ans">{esc(pair.get("base", ""))}</div>',
                    f'<div class="ans">{esc(pair.get("tuned", ""))}</div>',
                    f'<div class="ans">{esc(it.get("reference") or "")}</div>',
                    _probe_cell(it),
                ]
            )
    if not rows:
        return ""
    return "<h2>Answers</h2>" + table(["source", "question", "setting", "base", "tuned", "reference", "probe"], rows)


def _probe_cell(item: dict) -> str:
    """`base pass, tuned fail` for a probe (with what the failing answer lacked); empty otherwise."""
    passed = item.get("passed")
    if not isinstance(passed, dict):
        return ""
    missing = item.get("missing") or {}
    parts = []
    for role in ("base", "tuned"):
        if role not in passed:
            continue
        ok = bool(passed[role])
        lacks = "" if ok or not missing.get(role) else f" (missing: {', '.join(map(str, missing[role]))})"
        word = "pass" if ok else "fail"
        parts.append(f'<span class="{"better" if ok else "worse"}">{role} {word}{esc(lacks)}</span>')
    return "<br>".join(parts)
