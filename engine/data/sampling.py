"""The evaluation's sampling settings, each named by what it is and recorded in full.

A setting's name says how its answers were decoded: `greedy` is plain argmax decoding,
`greedy+rep1.1` the same over logits with a repetition penalty of 1.1, `sampled-t0.7+rep1.1`
seeded sampling at temperature 0.7 with that penalty. Calling the penalised setting "greedy"
hid that plain greedy output differs (a small model echoes the question), so the name carries
every choice that changes the text and the record carries every parameter.

The summary keys of a setting keep a fixed suffix whatever its parameters ("" for the main
greedy setting, "_plain", "_sampled"), so `recipe diff` and the verdict compare like with like
across runs; the setting's name and parameters sit beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# mlx-lm's sampler is built from the temperature alone: these filters stay off. They are
# recorded so a reader (or an Ollama Modelfile) need not guess mlx-lm's defaults.
TOP_P = 1.0  # nucleus sampling off
TOP_K = 0  # top-k off
MIN_P = 0.0  # min-p off
MAIN, PLAIN, SAMPLED = "", "_plain", "_sampled"  # summary key suffixes
LEGACY_SUFFIXES = {"greedy": MAIN, "sampled": SAMPLED}  # eval.json names before evaluate v4


def penalised(repetition_penalty: float | None) -> bool:
    return repetition_penalty is not None and repetition_penalty != 1.0


def setting_label(temperature: float, repetition_penalty: float | None) -> str:
    """`greedy`, `greedy+rep1.1`, `sampled-t0.7`, `sampled-t0.7+rep1.1`."""
    name = "greedy" if temperature == 0 else f"sampled-t{temperature:g}"
    return name + (f"+rep{repetition_penalty:g}" if penalised(repetition_penalty) else "")


@dataclass(frozen=True)
class Sampling:
    """How one setting's answers are generated."""

    suffix: str  # MAIN | PLAIN | SAMPLED: where its scores go in the flat summary
    temperature: float
    repetition_penalty: float | None  # None: no penalty
    repetition_context_size: int
    seed: int
    max_tokens: int  # the default limit; a prompt's own max_tokens wins (recorded per item)
    batch_size: int  # answers generated together
    probes: bool  # whether the probe prompts are asked in this setting
    shared_batches: bool = True  # evaluate v5: every setting's rows in one batch, seeded seed + its index

    @property
    def label(self) -> str:
        return setting_label(self.temperature, self.repetition_penalty)

    def record(self) -> dict[str, Any]:
        """Every parameter, for eval.json, metrics.json, the report and `recipe show`/`diff`."""
        return {
            "label": self.label,
            "summary_suffix": self.suffix,
            "decoding": "greedy" if self.temperature == 0 else "sampling",
            "temperature": self.temperature,
            "top_p": TOP_P,
            "top_k": TOP_K,
            "min_p": MIN_P,
            "repetition_penalty": self.repetition_penalty if penalised(self.repetition_penalty) else 1.0,
            "repetition_context_size": self.repetition_context_size if penalised(self.repetition_penalty) else None,
            "seed": self.seed,
            "seed_per_batch": (
                f"seed + batch index (up to {self.batch_size} answers a batch, every setting's together)"
                if self.shared_batches
                else f"seed + {self.batch_size} x batch index"
            ),
            "max_tokens": self.max_tokens,
            "asked": "voice and probe prompts" if self.probes else "voice prompts",
        }


def legacy_record(name: str, eval_settings: dict) -> dict[str, Any]:
    """A setting of an eval.json written before evaluate v4 ("greedy"/"sampled"), rebuilt from the
    eval settings it recorded: its "greedy" answers had the repetition penalty too."""
    suffix = LEGACY_SUFFIXES.get(name, f"_{name}")
    if not eval_settings or name not in LEGACY_SUFFIXES:
        return {"label": name, "summary_suffix": suffix, "recorded": False}
    temperature = float(eval_settings.get("temperature", 0.7)) if name == "sampled" else 0.0
    rp = eval_settings.get("repetition_penalty")
    sampling = Sampling(
        suffix,
        temperature,
        float(rp) if isinstance(rp, (int, float)) else None,
        20,  # mlx-lm's window, the only one older versions used
        int(eval_settings.get("seed", 0)),
        int(eval_settings.get("max_tokens", 512)),
        8,
        name == "greedy",
        shared_batches=False,
    )
    return {**sampling.record(), "recorded": False}


def describe(record: dict[str, Any]) -> str:
    """One line of a setting's parameters: `temperature 0, top_p 1, ... max_tokens 96`."""
    if record.get("recorded") is False and "temperature" not in record:
        return "parameters not recorded (an older run)"
    rp = record.get("repetition_penalty")
    penalty = f"repetition_penalty {rp:g} over the last {record.get('repetition_context_size')} tokens"
    parts = [
        f"temperature {record.get('temperature', 0):g}",
        f"top_p {record.get('top_p', TOP_P):g}",
        f"top_k {record.get('top_k', TOP_K)}",
        f"min_p {record.get('min_p', MIN_P):g}",
        penalty if penalised(rp) else "no repetition penalty",
        f"seed {record.get('seed')}",
        f"max_tokens {record.get('max_tokens')}",
    ]
    rebuilt = record.get("recorded") is False
    note = " (rebuilt from the run's eval settings: recorded before evaluate v4)" if rebuilt else ""
    return ", ".join(parts) + note


def recorded_settings(eval_doc: Any) -> dict[str, dict[str, Any]]:
    """Answer key -> the setting's record, main setting first, for any eval.json: those of evaluate
    v4 and later as written, older ones ("greedy", "sampled") rebuilt from their eval settings."""
    if not isinstance(eval_doc, dict):
        return {}
    sampling = eval_doc.get("sampling")
    if isinstance(sampling, dict) and sampling:
        return {k: v for k, v in sampling.items() if isinstance(v, dict)}
    names = list(eval_doc.get("scores") or {})
    for item in eval_doc.get("items") or []:
        names += [n for n in (item.get("answers") or {}) if n not in names]
    names.sort(key=lambda n: n != "greedy")  # the main setting first, as evaluate writes it now
    eval_settings = ((eval_doc.get("settings") or {}).get("eval")) or {}
    return {name: legacy_record(name, eval_settings) for name in names}


def main_setting(eval_doc: Any) -> str | None:
    """The answer key of the main setting (probes, judge and verdict use its answers)."""
    return next(iter(recorded_settings(eval_doc)), None)
