"""The base model's description read from model cards as people write them (or break them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.models.base_metadata import base_general, finetune_general


@pytest.mark.parametrize(
    "card, expected",
    [
        # A string language, a license with its own name and link (the "other" licenses), CRLF lines.
        (
            "---\r\nlicense: other\r\nlicense_name: llama3\r\nlicense_link: LICENSE\r\nlanguage: en\r\n---\r\n# Card",
            {
                "general.license": "other",
                "general.license.name": "llama3",
                "general.license.link": "LICENSE",
                "general.languages": ["en"],
            },
        ),
        ("---\nlicense: [unclosed\n---\n", {}),  # broken YAML: nothing from it, no crash
        ("# A card without front matter\nlicense: mit\n", {}),
        ("---\n- a list, not a mapping\n---\n", {}),
        ("---\ntags: [1, null, chat, '']\nlanguage: []\n---\n", {"general.tags": ["1", "chat"]}),
    ],
    ids=["license-name-link", "broken-yaml", "no-front-matter", "list-front-matter", "odd-values"],
)
def test_model_card_front_matter(tmp_path: Path, card: str, expected: dict) -> None:
    folder = tmp_path / "my-base"
    folder.mkdir()
    (folder / "README.md").write_text(card, encoding="utf-8", newline="")
    assert base_general(folder) == {**expected, "general.name": "my-base"}


def test_a_base_that_says_nothing_still_gives_a_described_fine_tune(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    general = finetune_general(base_general(tmp_path / "bare"), "voice")
    assert general == {
        "general.type": "model",
        "general.name": "voice",
        "general.finetune": "voice",
        "general.description": "LoRA fine-tune of bare",
        "general.base_model.count": 1,
        "general.base_model.0.name": "bare",
    }
    assert finetune_general({}, "voice")["general.description"] == "LoRA fine-tune"
    assert "general.base_model.count" not in finetune_general({}, "voice")
