"""Emoji from the npm packages ``emoji-datasource-{google,twitter}`` and ``emojibase-data``.

emoji-datasource gives the images (``img/<vendor>/64/*.png``, RGBA), the old Unicode names ("SMILING
FACE WITH OPEN MOUTH"), categories and skin-tone variants; emojibase-data gives the everyday CLDR
labels ("grinning face with big eyes") and tags. The two are joined on the code points (emojibase
drops the FE0F variation selectors that emoji-datasource keeps).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

VENDORS = ("google", "twitter")
TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}
GENDER_WORDS = {"man": "man", "men": "man", "woman": "woman", "women": "woman", "person": "person", "people": "person"}
_ZWJ_GENDER = re.compile(r"-200D-(2640|2642)")


@dataclass(slots=True)
class Emoji:
    code: str  # emoji-datasource "unified", e.g. "1F44B-1F3FD"
    base: str  # the base emoji's code ("1F44B"); equals code for a base emoji
    name: str  # old Unicode name, lower case ("waving hand sign"); a variant has its base's name
    label: str  # CLDR label ("waving hand: medium skin tone")
    category: str
    subcategory: str
    short_names: list[str]
    tags: list[str]
    images: dict[str, str]  # vendor -> path relative to the package folder
    tones: tuple[str, ...] = ()  # tone names of a skin-tone variant, e.g. ("medium",)
    variants: list[str] = field(default_factory=list)  # codes of the skin-tone variants of a base emoji
    sort_order: int = 0

    @property
    def is_variant(self) -> bool:
        return self.code != self.base

    @property
    def base_label(self) -> str:
        return self.label.rsplit(":", 1)[0] if self.is_variant else self.label

    @property
    def gender(self) -> str | None:
        """"man" / "woman" for labels naming one ("woman cook"), "person" for none ("cook"),
        None when several are named ("family: man, woman, boy")."""
        found = [GENDER_WORDS[w] for w in _words(self.base_label) if w in GENDER_WORDS]
        if len(found) > 1:
            return None
        return found[0] if found else "person"

    @property
    def gender_stem(self) -> str:
        """The label without man/woman/person words: "man cook", "woman cook" and "cook" share "cook"."""
        return " ".join(w for w in _words(self.base_label) if w not in GENDER_WORDS)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w’'-]+", text.lower())


def norm_code(code: str) -> str:
    """An emoji code without variation selectors, upper case (emoji-datasource and emojibase differ there)."""
    return code.upper().replace("-FE0F", "")


def code_family(code: str) -> str:
    """Code points with gender signs dropped and man/woman turned into person (ZWJ sequences)."""
    code = _ZWJ_GENDER.sub("", norm_code(code))
    if "-200D-" in code:
        code = re.sub(r"\b(1F468|1F469)\b", "1F9D1", code)
    return code


def find_package(sources: Path, name: str) -> Path:
    """``sources/<name>`` as laid out by scripts/install_data_deps.sh (or an npm ``package`` folder)."""
    for candidate in (sources / name, sources / name / "package", sources / "node_modules" / name):
        if (candidate / "package.json").is_file():
            return candidate
    raise FileNotFoundError(f"npm package {name!r} not found under {str(sources)!r} "
                            "(run scripts/install_data_deps.sh)")


def load_emoji(sources: str | os.PathLike, vendors: tuple[str, ...] = VENDORS) -> tuple[dict[str, Emoji], dict[str, Path]]:
    """All emoji (base emoji and skin-tone variants) by code, and each vendor's package folder.

    An emoji is kept only when every vendor has an image of it.
    """
    sources = Path(sources).expanduser()
    folders = {v: find_package(sources, f"emoji-datasource-{v}") for v in vendors}
    base_data = find_package(sources, "emojibase-data")
    labels: dict[str, dict] = {}
    for entry in json.loads((base_data / "en" / "data.json").read_text(encoding="utf-8")):
        labels[norm_code(entry["hexcode"])] = entry
        for skin in entry.get("skins") or []:
            labels[norm_code(skin["hexcode"])] = {**skin, "tags": entry.get("tags", [])}

    per_vendor = {}
    for vendor, folder in folders.items():
        per_vendor[vendor] = {e["unified"]: e for e in json.loads((folder / "emoji.json").read_text(encoding="utf-8"))}
    first = per_vendor[vendors[0]]

    def images_of(code: str, file: str) -> dict[str, str] | None:
        found = {}
        for vendor in vendors:
            relative = f"img/{vendor}/64/{file}"
            if not (folders[vendor] / relative).is_file():
                return None
            found[vendor] = relative
        return found

    emoji: dict[str, Emoji] = {}
    for code, entry in first.items():
        if entry.get("category") == "Component" or any(code not in per_vendor[v] for v in vendors):
            continue
        label = labels.get(norm_code(code))
        images = images_of(code, entry["image"])
        if label is None or images is None:
            continue
        base = Emoji(
            code=code, base=code, name=(entry.get("name") or "").lower(), label=label["label"],
            category=entry["category"], subcategory=entry["subcategory"],
            short_names=list(entry.get("short_names") or []), tags=list(label.get("tags") or []),
            images=images, sort_order=int(entry.get("sort_order") or 0),
        )
        emoji[code] = base
        for tone_key, variant in sorted((entry.get("skin_variations") or {}).items()):
            vlabel = labels.get(norm_code(variant["unified"]))
            vimages = images_of(variant["unified"], variant["image"])
            if vlabel is None or vimages is None:
                continue
            tones = tuple(TONES[t] for t in tone_key.split("-"))
            emoji[variant["unified"]] = Emoji(
                code=variant["unified"], base=code, name=base.name, label=vlabel["label"],
                category=base.category, subcategory=base.subcategory, short_names=base.short_names,
                tags=base.tags, images=vimages, tones=tones, sort_order=base.sort_order,
            )
            base.variants.append(variant["unified"])
    return emoji, folders


def tone_phrase(tones: tuple[str, ...]) -> str:
    """("medium",) -> "medium skin tone"; ("light", "dark") -> "light and dark skin tones"."""
    if not tones:
        return "no skin tone (the default yellow)"
    if len(set(tones)) == 1:
        return f"{tones[0]} skin tone"
    return f"{' and '.join(tones)} skin tones"
