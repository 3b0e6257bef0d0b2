"""curate's language filter (py3langid) on real-shaped answers: markdown lists, jargon, short replies.

The old filter counted common English words and dropped an English bullet list of bold key terms
(8% common words, under its 12% cutoff); it also never judged answers under 8 words.
"""

from __future__ import annotations

import pytest

from engine.data.quality import language_reason

ENGLISH = {
    "bold bullet list": "**What changes during a fast:**\n\n- **Insulin** drops steadily\n- **Glucagon** rises\n"
    "- **Growth hormone** increases, preserving lean mass\n- **Noradrenaline** climbs, keeping energy up\n"
    "- **Electrolytes** stay stable for most people\n- **Ketones** become the main fuel after 24-48 hours",
    "terse glossary": "**Autophagy**: cellular recycling. **mTOR**: growth signal, low when fasting. **AMPK**: "
    "energy sensor, high when fasting. **IGF-1**: falls during prolonged fasts.",
    "drug names": "- **Metformin**\n- **SGLT2 inhibitors** (empagliflozin, dapagliflozin)\n- **GLP-1 agonists** "
    "(semaglutide, liraglutide)\n- **Insulin** (glargine, lispro)",
    "lab values": "1. **Fasting glucose** above 126 mg/dL\n2. **HbA1c** of 6.5% or more\n3. **Triglycerides** "
    "above 150 mg/dL\n4. **HDL** under 40 mg/dL",
    "foreign food names": "**Croissants**, **baguettes** and **pain au chocolat** are refined flour; **pasta al "
    "dente** and **sourdough** raise glucose less.",
    "short reply": "Yes, in most cases.",
    "paragraphs": "Think of body fat as a **refrigerator** and liver sugar as a **wallet**.\n\nInsulin locks the "
    "fridge: while it stays high you can only spend what is in the wallet, so you get hungry.",
    "numbers only": "16:8, 18:6, 20:4",
}

FOREIGN = {
    "German": "Stellen Sie sich Ihr Körperfett wie einen **Kühlschrank** vor. Solange das **Insulin** hoch ist, "
    "bleibt er verschlossen, und Sie bekommen Hunger.",
    "German list": "**Beim Fasten:**\n\n- **Insulin** sinkt stetig\n- **Glukagon** steigt\n- **Ketone** werden "
    "zum Hauptbrennstoff",
    "short German": "Nein, auf keinen Fall.",
    "short Spanish": "Sí, el ayuno reduce la insulina.",
    "French": "Le jeûne n'est pas la famine : vous choisissez de ne pas manger et votre corps puise dans ses "
    "**réserves de graisse**.",
    "Spanish list": "**Consejos:**\n\n- **Beba agua**, té o café solo\n- **Añada sal** al caldo\n- **Hable con su "
    "médico** si toma medicamentos",
    "Dutch": "Vasten is geen verhongeren. Tijdens het vasten daalt de **insuline** en gebruikt het lichaam de "
    "opgeslagen vetreserves.",
    "Russian": "Голодание снижает уровень **инсулина**, и организм начинает сжигать запасённый жир.",
}


@pytest.mark.parametrize("label", ENGLISH)
def test_english_answers_are_kept(label: str) -> None:
    assert language_reason(ENGLISH[label], "en") is None


@pytest.mark.parametrize("label", FOREIGN)
def test_other_languages_are_dropped_with_the_language_named(label: str) -> None:
    reason = language_reason(FOREIGN[label], "en")
    assert reason is not None and reason.startswith("wrong language (looks like ")
    assert "not en: P(en) " in reason


def test_the_recipe_language_decides_which_is_wrong() -> None:
    assert language_reason(FOREIGN["German"], "de") is None
    assert language_reason(FOREIGN["German list"], "de") is None
    reason = language_reason(ENGLISH["paragraphs"], "de")
    assert reason is not None and reason.startswith("wrong language (looks like en, not de")


def test_a_language_the_model_does_not_know_is_not_judged() -> None:
    assert language_reason(FOREIGN["German"], "yi") is None  # Yiddish: not among py3langid's languages


@pytest.mark.parametrize("blank", ["", "   ", "\n\n\t"])
def test_empty_answers_are_dropped(blank: str) -> None:
    assert language_reason(blank, "en") == "empty answer"
