"""Demo-sized training data without the LLM passes: chat examples cut from the demo transcripts.

The demo's real Q&A pairs come from two LLM passes; the benchmarks only need examples of the
same shape and length (a question, a 60-90 word answer in the lecturer's words), and need them
without a model or the network, identically on every machine. Standard library only: the GPU
check imports this on a machine that may have little else.
"""

from __future__ import annotations

import re
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "recipes" / "demo"
SYSTEM = "You are Dr. Maya Lindqvist. Answer in your own voice."
_CUE = re.compile(r"^(WEBVTT|Kind:|Language:|\d+$|[\d:.,]+ --> [\d:.,]+)")
TOPICS = {
    "fasting_basics.txt": "what happens in the body when you skip a meal",
    "insulin.vtt": "what insulin does",
    "breakfast.srt": "whether breakfast matters",
}


def transcript_text(path: Path) -> str:
    """Plain text of a .txt, .vtt or .srt transcript (cue numbers and timings dropped)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return " ".join(line for line in lines if line and not _CUE.match(line))


def demo_examples(words_per_answer: int = 75) -> list[dict]:
    """mlx-lm chat examples: one per 75-word stretch (~100 tokens) of three demo transcripts (35 in all).

    insulin_resistance.vtt is left out: it is in YouTube's rolling auto-caption format, whose
    repeated lines and inline timings would make odd, overlong answers."""
    rows = []
    for name, topic in TOPICS.items():
        words = transcript_text(DEMO / name).split()
        for i, start in enumerate(range(0, len(words) - words_per_answer + 1, words_per_answer)):
            answer = " ".join(words[start : start + words_per_answer])
            question = f"What do you say about {topic}? (part {i + 1})"
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
    return rows


def demo_split(valid_every: int = 5) -> tuple[list[dict], list[dict]]:
    """(train, valid): every `valid_every`-th example is held out, like split's 0.2."""
    rows = demo_examples()
    return [r for i, r in enumerate(rows) if i % valid_every], rows[::valid_every]
