"""The base model's descriptive GGUF keys (`general.*`), and those of a fine-tune made from it.

Where they come from: a GGUF base keeps its own keys (the importer saves them next to the
converted folder, GENERAL_FILE); an HF folder or hub id has them in its model card (README.md
front matter: license, tags, language) and its hub id (organization, name, repo URL).

What the fine-tune's GGUF says: its own name; the base's license, tags, languages, basename and
size label (a LoRA fine-tune is a derivative of the same size, bound by the same license); the
base's identity (name, organization, author, url, version, repo) as `general.base_model.0.*`,
since those describe the base, not the fine-tune. The base's own lineage (its base models) and
training datasets are not carried: they describe how the base was made.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

GENERAL_FILE = "gguf_general.json"
# Keys that describe the file, not the model: the writer sets them.
_FILE_KEYS = ("general.architecture", "general.file_type", "general.quantization_version", "general.alignment")
CARRIED = ("license", "license.name", "license.link", "tags", "languages", "basename", "size_label")
IDENTITY = ("name", "author", "version", "organization", "description", "url", "doi", "uuid", "repo_url")
_HUB_FOLDER = re.compile(r"models--([^/]+?)--([^/]+)$")


def gguf_general(meta: dict[str, Any]) -> dict[str, Any]:
    """The descriptive `general.*` keys of a GGUF's metadata."""
    return {k: v for k, v in meta.items() if k.startswith("general.") and k not in _FILE_KEYS}


def _front_matter(readme: Path) -> dict[str, Any]:
    """The YAML block a model card opens with ({} when there is none or it does not parse)."""
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"---\r?\n(.*?)\r?\n---\r?\n", text, re.DOTALL)
    if not match:
        return {}
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(match.group(1))
    except YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _strings(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if isinstance(v, str | int | float) and str(v)]


def _hub_id(base: Path | str) -> str | None:
    """owner/name for a hub id, or a folder inside the HF cache (models--owner--name/...)."""
    text = str(base)
    if not Path(text).exists() and text.count("/") == 1:
        return text
    for part in [Path(text), *Path(text).parents]:
        if match := _HUB_FOLDER.search(part.name):
            return f"{match.group(1)}/{match.group(2)}"
    return None


def _hub_folder(hub_id: str) -> Path | None:
    """The cached snapshot of a hub model, without touching the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - no cached copy (or no hub client): the id still names it
        return None


def _from_card(folder: Path | None, hub_id: str | None) -> dict[str, Any]:
    card = _front_matter(folder / "README.md") if folder else {}
    general: dict[str, Any] = {}
    for key, target in (("license", "license"), ("license_name", "license.name"), ("license_link", "license.link")):
        if isinstance(card.get(key), str):
            general[f"general.{target}"] = card[key]
    for key, target in (("tags", "tags"), ("language", "languages")):
        if values := _strings(card.get(key)):
            general[f"general.{target}"] = values
    if hub_id:
        owner, name = hub_id.split("/")
        general |= {
            "general.name": name,
            "general.organization": owner,
            "general.repo_url": f"https://huggingface.co/{hub_id}",
        }
    elif folder:
        general["general.name"] = folder.name
    return general


def base_general(base: Path | str) -> dict[str, Any]:
    """The base model's descriptive keys, from wherever it came from."""
    folder = Path(base) if Path(base).is_dir() else None
    if folder and (folder / GENERAL_FILE).is_file():
        return dict(json.loads((folder / GENERAL_FILE).read_text(encoding="utf-8")))
    hub_id = _hub_id(base)
    if folder is None and hub_id:
        folder = _hub_folder(hub_id)
    return _from_card(folder, hub_id)


def finetune_general(base: dict[str, Any], name: str) -> dict[str, Any]:
    """The `general.*` keys of a LoRA fine-tune named `name` of a base described by `base`."""
    base_name = base.get("general.name")
    general: dict[str, Any] = {
        "general.type": "model",
        "general.name": name,
        "general.finetune": name,
        "general.description": f"LoRA fine-tune of {base_name}" if base_name else "LoRA fine-tune",
    }
    general |= {f"general.{k}": base[f"general.{k}"] for k in CARRIED if base.get(f"general.{k}") not in (None, "", [])}
    identity = {k: base[f"general.{k}"] for k in IDENTITY if base.get(f"general.{k}") not in (None, "", [])}
    if identity:
        general["general.base_model.count"] = 1
        general |= {f"general.base_model.0.{k}": v for k, v in identity.items()}
    return general
