"""Near-duplicate removal at scale: the engine (rapidfuzz cdist, blocked) vs the original difflib loop.

Generates N questions (16 templates over ~70 subjects, ~40 objects, 12 groups of people, 10 lead-ins, 20 tails, with
~7% near-duplicate rewrites: synonyms, filler words, case, punctuation), then
  1. times the engine's `find_duplicates` on all N (default token_sort_ratio, and token_set_ratio),
  2. times pairwise `difflib.SequenceMatcher(...).ratio() >= 0.85` on a random sample of pairs
     and extrapolates to all N*(N-1)/2 pairs (running it for real would take hours),
  3. on a SAMPLE-question subset runs both exhaustively and compares the duplicate pairs found.

    python benchmarks/dedup.py [--n 20000] [--sample 1000] [--pairs 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.dedup import candidate_pairs, find_duplicates, normalise  # noqa: E402

SUBJECTS = """coffee sleep fasting insulin stress sugar salt walking alcohol sunlight protein fibre
cholesterol ketones the-gut-microbiome vitamin-D screen-time cold-showers muscle-mass ageing breakfast
snacking hydration melatonin heart-rate inflammation iron omega-3 naps noise cortisol dopamine serotonin
ghrelin leptin glucose fructose creatine magnesium zinc caffeine nicotine antibiotics probiotics yoga
sprinting weightlifting saunas meditation loneliness shift-work jet-lag chewing-gum artificial-sweeteners
red-meat olive-oil eggs nuts dark-chocolate green-tea milk bread rice potatoes berries""".split()
OBJECTS = """memory weight-loss deep-sleep appetite energy the-immune-system blood-sugar mood focus recovery
the-liver bone-density skin digestion longevity hormones cravings metabolism the-brain stamina blood-pressure
eyesight hearing fertility joints the-kidneys arteries muscle-growth body-temperature dreams anxiety
headaches allergies wound-healing hair-growth teeth the-thyroid reaction-time posture balance""".split()
PEOPLE = """older-adults teenagers athletes pregnant-women night-workers diabetics vegetarians children
people-over-40 office-workers runners new-parents""".split()
TEMPLATES = [
    "Why does {s} affect {o}?",
    "How does {s} change {o} in {p}?",
    "What happens to {o} when you cut {s}?",
    "Is {s} bad for {o}?",
    "Can too much {s} harm {o}?",
    "Should {p} worry about {s}?",
    "How much {s} is safe for {p}?",
    "What is the link between {s} and {o}?",
    "Does {s} really help {o} or is that a myth?",
    "When is the best time of day for {s}?",
    "Why do {p} react differently to {s}?",
    "What does {s} do to {o} over the long term?",
    "How quickly does {o} recover after stopping {s}?",
    "Is {s} better than {s2} for {o}?",
    "Why do doctors recommend limiting {s} for {p}?",
    "What is the science behind {s} and {o}?",
]
LEADS = [
    "",
    "",
    "",
    "Honestly, ",
    "Quick question: ",
    "I keep hearing this: ",
    "My doctor was vague, so: ",
    "Something I never understood: ",
    "As a beginner, ",
    "From a science point of view, ",
]
TAILS = [
    "",
    "",
    "",
    " if I exercise every day",
    " after a late dinner",
    " when I am under pressure",
    " during a cold winter",
    " while travelling",
    " on a low-carb diet",
    " in my forties",
    " with a family history of diabetes",
    " after a bad night",
    " compared with ten years ago",
    " if I only sleep six hours",
    " on weekends",
    " when I train for a marathon",
    " after surgery",
    " in a hot climate",
    " while breastfeeding",
    " when I work night shifts",
]
SYNONYMS = {
    "affect": "influence",
    "harm": "damage",
    "help": "improve",
    "bad": "harmful",
    "Why does": "How come",
    "recommend limiting": "advise less",
    "What happens to": "What becomes of",
}


def generate(n: int, seed: int = 0, dup_rate: float = 0.07) -> list[str]:
    return generate_with_truth(n, seed, dup_rate)[0]


def generate_with_truth(n: int, seed: int = 0, dup_rate: float = 0.07) -> tuple[list[str], list[int]]:
    """Questions and, for each, the index of the question it rewrites (its own index if none)."""
    rng = random.Random(seed)
    out: list[str] = []
    origin: list[int] = []
    while len(out) < n:
        if out and rng.random() < dup_rate:
            source = rng.randrange(len(out))
            out.append(rewrite(out[source], rng))
            origin.append(origin[source])  # a rewrite of a rewrite shares the first origin
            continue
        origin.append(len(out))
        template = rng.choice(TEMPLATES)
        s, s2 = rng.sample(SUBJECTS, 2)
        body = template.format(s=s, s2=s2, o=rng.choice(OBJECTS), p=rng.choice(PEOPLE)).replace("-", " ")
        lead = rng.choice(LEADS)
        body = body[0].lower() + body[1:] if lead else body
        out.append(lead + body[:-1] + rng.choice(TAILS) + "?")
    return out, origin


def planted_pairs(origin: list[int]) -> set[tuple[int, int]]:
    """Pairs of questions that are rewrites of the same original: the true duplicates."""
    groups: dict[int, list[int]] = {}
    for i, o in enumerate(origin):
        groups.setdefault(o, []).append(i)
    return {pair for members in groups.values() for pair in itertools.combinations(members, 2)}


def score_against(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> str:
    hit = len(found & truth)
    precision = hit / len(found) if found else 1.0
    return f"{len(found)} pairs, {hit}/{len(truth)} planted duplicates found, precision {precision:.0%}"


def rewrite(q: str, rng: random.Random) -> str:
    """A near-duplicate the way an LLM repeats itself across videos."""
    for word, other in SYNONYMS.items():
        if word in q and rng.random() < 0.6:
            q = q.replace(word, other, 1)
    words = q.rstrip("?").split(" ")
    if rng.random() < 0.4:
        words.insert(min(len(words), 1 + rng.randrange(2)), rng.choice(["really", "actually", "exactly"]))
    text = " ".join(words)
    return (text.lower() if rng.random() < 0.3 else text) + rng.choice(["?", "??", " ?", ""])


class Timer:
    """Wall and CPU seconds (CPU of all threads: robust when the machine is shared)."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0

    def __str__(self) -> str:
        return f"{self.wall:.1f} s wall, {self.cpu:.1f} s CPU"


def difflib_pairs(texts: list[str], threshold: float = 0.85) -> set[tuple[int, int]]:
    found = set()
    for i, j in itertools.combinations(range(len(texts)), 2):
        if difflib.SequenceMatcher(None, texts[i], texts[j]).ratio() >= threshold:
            found.add((i, j))
    return found


def time_difflib(texts: list[str], pairs: int, seed: int) -> tuple[Timer, float]:
    """The timer of `pairs` random pairs and the factor to every pair of `texts`."""
    rng = random.Random(seed)
    n = len(texts)
    sample = [(rng.randrange(n), rng.randrange(n)) for _ in range(pairs)]
    with Timer() as t:
        for i, j in sample:
            difflib.SequenceMatcher(None, texts[i], texts[j]).ratio()
    return t, n * (n - 1) / 2 / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=100000, help="difflib pairs timed for the extrapolation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=-1)
    parser.add_argument(
        "--plain-sample",
        type=int,
        default=4000,
        help="questions timed with plain cdist (no token-set bound), extrapolated to N; 0: skip",
    )
    args = parser.parse_args()

    questions, origin = generate_with_truth(args.n, args.seed)
    print(f"{args.n} generated questions, e.g. {questions[0]!r}")
    with Timer() as t:
        dups = find_duplicates(questions, [0.0] * len(questions), workers=args.workers)
    engine_s, engine_cpu = t.wall, t.cpu
    print(f"engine default (find_duplicates, token_sort_ratio >= 85): {t} -> {len(dups)} rows removed as duplicates")

    with Timer() as t:
        set_dups = find_duplicates(questions, [0.0] * len(questions), scorer="token_set_ratio", workers=args.workers)
    print(f"engine with scorer token_set_ratio >= 85 (bound + rapidfuzz): {t} -> {len(set_dups)} rows removed")
    planted = sum(o != i for i, o in enumerate(origin))
    print(f"(the generator planted {planted} rewrites, {planted / args.n:.1%} of the questions)")

    if args.plain_sample:
        k = min(args.plain_sample, args.n)
        with Timer() as t:
            candidate_pairs(
                [normalise(q) for q in questions[:k]], "token_set_ratio", workers=args.workers, prefilter=False
            )
        scale = (args.n * (args.n - 1)) / (k * (k - 1))
        print(
            f"token_set_ratio by plain cdist, no bound ({k} questions, x{scale:.0f} pairs): {t} "
            f"-> extrapolated {t.wall * scale:.0f} s wall, {t.cpu * scale:.0f} s CPU"
        )

    lowered = [q.lower() for q in questions]
    t, scale = time_difflib(lowered, args.pairs, args.seed)
    difflib_s, difflib_cpu = t.wall * scale, t.cpu * scale
    print(
        f"original (difflib ratio >= 0.85 on every pair, extrapolated from {args.pairs} pairs: {t}): "
        f"{difflib_s:.0f} s wall ({difflib_s / 3600:.1f} h), {difflib_cpu:.0f} s CPU"
    )
    print(f"speed-up: {difflib_s / engine_s:.0f}x wall, {difflib_cpu / engine_cpu:.0f}x CPU")

    sample = questions[: args.sample]
    with Timer() as ours_t:
        ours = set(candidate_pairs([normalise(q) for q in sample], workers=args.workers))  # the default scorer
    with Timer() as theirs_t:
        theirs = difflib_pairs([q.lower() for q in sample])
    truth = planted_pairs(origin[: args.sample])
    print(f"\n{args.sample}-question sample ({len(truth)} planted duplicate pairs), exhaustive:")
    print(f"  engine token_sort_ratio >= 85 ({ours_t}): {score_against(ours, truth)}")
    print(f"  difflib ratio >= 0.85        ({theirs_t}): {score_against(theirs, truth)}")
    print(f"  found by both {len(ours & theirs)}, engine only {len(ours - theirs)}, difflib only {len(theirs - ours)}")
    normalised = [normalise(q) for q in sample]
    for scorer, cut in (("token_set_ratio", 85), ("ratio", 85), ("token_sort_ratio", 90), ("ratio", 90)):
        other = set(candidate_pairs(normalised, scorer=scorer, threshold=cut, workers=args.workers))
        print(f"  for comparison, {scorer} >= {cut}: {score_against(other, truth)}")
    for label, pairs in (("engine only", ours - theirs), ("difflib only", theirs - ours)):
        for i, j in sorted(pairs)[:3]:
            print(f"  {label}: {sample[i]!r} ~ {sample[j]!r}")


if __name__ == "__main__":
    main()
