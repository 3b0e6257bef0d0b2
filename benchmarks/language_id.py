"""Language identification for curate's `require_language`: two libraries vs the old common-word share.

Runs each method on real-shaped answers (the shapes of a real health channel's generated Q&A: short
replies, multi-paragraph answers with **bold** terms, bullet lists made mostly of bold key words,
numbers and units) and on non-English answers of the same shapes, then prints per method: accuracy
(predicted language == true language), how the curate filter with `creator.language: en` would
decide (English wrongly dropped, foreign wrongly kept), the one-off load time and the time per text.

    python benchmarks/language_id.py [--repeat 20]

Libraries: py3langid (what the engine uses) and langdetect (seeded, or it is not deterministic).
Either is skipped with a note when not installed (`pip install langdetect` to compare).
lingua-language-detector was ruled out by size alone: its Linux wheel is ~96 MB.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data import quality  # noqa: E402

# (true language, label, text). Written for this benchmark in the shapes the issue measured:
# answers average ~830 characters, 98.7% carry bold, 85% a list.
TEXTS: list[tuple[str, str, str]] = [
    ("en", "short reply", "Yes. A 24-hour fast lowers insulin, and that is the whole point of it."),
    ("en", "two sentences", "No, you will not burn muscle on a short fast. Growth hormone rises and protects it."),
    (
        "en",
        "bold bullet list (the issue's false positive)",
        "**Key hormonal changes:**\n\n- **Insulin** drops steadily\n- **Glucagon** rises\n"
        "- **Growth hormone** increases, preserving lean mass\n- **Noradrenaline** climbs, keeping energy up\n"
        "- **Electrolytes** stay stable for most people\n- **Ketones** become the main fuel after 24-48 hours",
    ),
    (
        "en",
        "numbered list with units",
        "1. **Fasting glucose** above 126 mg/dL\n2. **HbA1c** of 6.5% or more\n3. **Waist circumference** "
        "over 102 cm (men) or 88 cm (women)\n4. **Triglycerides** above 150 mg/dL\n5. **HDL** under 40 mg/dL",
    ),
    (
        "en",
        "multi-paragraph answer",
        "Think of your body fat as a **refrigerator** and the sugar in your liver as a **wallet**. When you "
        "eat, you put money in the wallet first; whatever does not fit goes into the fridge.\n\n"
        "The problem is that **insulin** locks the fridge. As long as insulin stays high, you can only spend "
        "what is in the wallet, so you get hungry even though you carry plenty of stored energy.\n\n"
        "That is why **counting calories** fails over the long term: you cut what goes in, but insulin still "
        "decides whether you can reach what is stored. Lower insulin, and the fridge opens again.",
    ),
    (
        "en",
        "list-heavy answer",
        "Here is what I tell my patients before a longer fast:\n\n- **Stay hydrated**: water, tea, black "
        "coffee\n- **Add salt**: a pinch in water or bone broth\n- **Medications**: adjust with your "
        "doctor, especially for **diabetes**\n- **Stop** if you feel unwell\n\n**Refeeding** matters too: "
        "break the fast gently with a small meal.",
    ),
    (
        "en",
        "terse technical",
        "**Autophagy**: cellular recycling. **mTOR**: growth signal, low when fasting. **AMPK**: energy "
        "sensor, high when fasting. **IGF-1**: falls during prolonged fasts.",
    ),
    ("en", "very short", "Yes, in most cases."),
    ("en", "bold one-liner", "**Short answer: no.** Not for healthy adults."),
    (
        "en",
        "foreign food names",
        "**Croissants**, **baguettes** and **pain au chocolat** are refined flour; **pasta al dente** and "
        "**sourdough** raise glucose less.",
    ),
    (
        "en",
        "drug names list",
        "- **Metformin**\n- **SGLT2 inhibitors** (empagliflozin, dapagliflozin)\n- **GLP-1 agonists** "
        "(semaglutide, liraglutide)\n- **Insulin** (glargine, lispro)",
    ),
    (
        "de",
        "German answer",
        "Stellen Sie sich Ihr Körperfett wie einen **Kühlschrank** vor. Solange das **Insulin** hoch ist, "
        "bleibt er verschlossen, und Sie bekommen Hunger, obwohl genug Energie gespeichert ist. Deshalb "
        "funktioniert das Kalorienzählen auf Dauer nicht.",
    ),
    (
        "de",
        "German bullet list",
        "**Wichtige Veränderungen beim Fasten:**\n\n- **Insulin** sinkt stetig\n- **Glukagon** steigt\n"
        "- **Wachstumshormon** nimmt zu und schützt die Muskeln\n- **Ketone** werden zum Hauptbrennstoff",
    ),
    (
        "fr",
        "French answer",
        "Le jeûne n'est pas la famine. Pendant un jeûne, vous choisissez de ne pas manger, et votre corps "
        "puise dans ses **réserves de graisse**. L'**insuline** baisse, ce qui permet enfin de les utiliser.",
    ),
    (
        "es",
        "Spanish answer",
        "Contar calorías no funciona a largo plazo porque la **insulina** decide si el cuerpo puede usar la "
        "grasa almacenada. Si la insulina se mantiene alta, el hambre vuelve aunque haya energía de sobra.",
    ),
    (
        "es",
        "Spanish bullet list",
        "**Consejos para un ayuno largo:**\n\n- **Beba agua**, té o café solo\n- **Añada sal** al agua o al "
        "caldo\n- **Hable con su médico** si toma medicamentos para la diabetes",
    ),
    (
        "pt",
        "Portuguese answer",
        "O jejum intermitente reduz a **insulina** e permite que o corpo queime a gordura armazenada. Não é "
        "preciso contar calorias: basta comer em horários definidos e evitar lanches entre as refeições.",
    ),
    (
        "it",
        "Italian answer",
        "Il digiuno non fa perdere massa muscolare se è breve: l'**ormone della crescita** aumenta e protegge "
        "i muscoli, mentre il corpo usa il grasso come fonte principale di energia.",
    ),
    ("de", "very short German", "Nein, auf keinen Fall."),
    ("es", "short Spanish", "Sí, el ayuno reduce la insulina."),
    (
        "nl",
        "Dutch answer",
        "Vasten is geen verhongeren. Tijdens het vasten daalt de **insuline** en gebruikt het lichaam de "
        "opgeslagen vetreserves, zodat je minder honger hebt dan je zou verwachten.",
    ),
]


def load_py3langid() -> Callable[[str], str]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return lambda text: identifier.classify(text)[0]


def load_langdetect() -> Callable[[str], str]:
    from langdetect import DetectorFactory, detect

    DetectorFactory.seed = 0  # langdetect samples n-grams at random: seed it for repeatable answers
    detect("warm up")  # loads its profiles
    return detect


def engine_filter(target: str) -> Callable[[str], str]:
    """What the engine's curate filter does (py3langid on markdown-stripped text)."""
    quality.language_probabilities("warm up")  # loads the engine's own copy of the model (timed as load)
    return lambda text: target if quality.language_reason(text, target) is None else "other"


def stopword_filter(target: str) -> Callable[[str], str]:
    """The old filter: share of common English words, cutoff 12%, only from 8 words on."""
    words = "the a an and or but of to in on at for with is are was were be been it this that you your i we they he "
    words += "she not do does can will as by from so if have has what when how why which there their more than about "
    words += "into just also very"
    common = set(words.split())

    def decide(text: str) -> str:
        tokens = [t.lower().strip(".,:;*-!?()") for t in text.split()]
        tokens = [t for t in tokens if t]
        if len(tokens) < 8:
            return target
        share = sum(t in common for t in tokens) / len(tokens)
        return target if share >= 0.12 else "other"

    return decide


def evaluate(name: str, load: Callable[[], Callable[[str], str]], repeat: int, as_filter: bool) -> None:
    try:
        started = time.perf_counter()
        detect = load()
        load_s = time.perf_counter() - started
    except ImportError as e:
        print(f"{name}: skipped ({e})")
        return
    predictions = [detect(text) for _, _, text in TEXTS]
    started = time.perf_counter()
    for _ in range(repeat):
        for _, _, text in TEXTS:
            detect(text)
    per_text_ms = (time.perf_counter() - started) / (repeat * len(TEXTS)) * 1000
    wrongly_dropped = [
        label for (lang, label, _), p in zip(TEXTS, predictions, strict=True) if lang == "en" and p != "en"
    ]
    wrongly_kept = [label for (lang, label, _), p in zip(TEXTS, predictions, strict=True) if lang != "en" and p == "en"]
    print(f"\n{name}: load {load_s * 1000:.0f} ms, {per_text_ms:.2f} ms per text")
    if not as_filter:
        right = sum(p == lang for (lang, _, _), p in zip(TEXTS, predictions, strict=True))
        print(f"  language accuracy {right}/{len(TEXTS)}")
        for (lang, label, _), p in zip(TEXTS, predictions, strict=True):
            if p != lang:
                print(f"    {label}: {lang} -> {p}")
    english = sum(lang == "en" for lang, _, _ in TEXTS)
    print(
        f"  as a filter for `en`: English wrongly dropped {len(wrongly_dropped)}/{english} {wrongly_dropped}, "
        f"foreign wrongly kept {len(wrongly_kept)}/{len(TEXTS) - english} {wrongly_kept}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed passes over the texts")
    args = parser.parse_args()
    english = sum(lang == "en" for lang, _, _ in TEXTS)
    print(f"{len(TEXTS)} texts: {english} English, {len(TEXTS) - english} in 6 other languages")
    evaluate("py3langid (raw text)", load_py3langid, args.repeat, as_filter=False)
    evaluate("langdetect (raw text, seed 0)", load_langdetect, args.repeat, as_filter=False)
    evaluate("old common-word share (12% cutoff)", lambda: stopword_filter("en"), args.repeat, as_filter=True)
    evaluate("engine filter (py3langid, markdown stripped)", lambda: engine_filter("en"), args.repeat, as_filter=True)


if __name__ == "__main__":
    main()
