"""Map emoji to WordNet synsets, keeping only mappings made with confidence.

A base emoji maps to the most frequent noun sense of one of its names whose lexicographer file fits
the emoji's subcategory (animals -> noun.animal, food -> noun.food, ...). Names are tried in order:
the CLDR label, the old Unicode name, the label without man/woman/person, the label or name without
a generic word ("cat face" -> "cat"), the short names. A country flag maps to its country's synset:
the noun.location sense of the country name whose definition says it is a country (republic,
kingdom, ...). Smileys, hands, hearts and most symbols are left unmapped: their names are not words.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lamra.pocketbeir.emoji import GENDER_WORDS, Emoji
from lamra.pocketbeir.wordnet import Synset, WordNet

_ARTIFACT = ("noun.artifact",)
_SYMBOL = ("noun.communication", "noun.shape")
#: emoji subcategory -> lexicographer files a fitting sense may come from (absent: never mapped)
SUBCATEGORY_LEXNAMES: dict[str, tuple[str, ...]] = {
    **{s: ("noun.animal",) for s in ("animal-mammal", "animal-bird", "animal-marine", "animal-bug",
                                     "animal-reptile", "animal-amphibian", "cat-face", "monkey-face")},
    "plant-flower": ("noun.plant",),
    "plant-other": ("noun.plant",),
    "food-fruit": ("noun.food", "noun.plant"),
    "food-vegetable": ("noun.food", "noun.plant"),
    "food-prepared": ("noun.food",),
    "food-asian": ("noun.food",),
    "food-sweet": ("noun.food",),
    "food-marine": ("noun.food", "noun.animal"),
    "drink": ("noun.food",),
    "dishware": _ARTIFACT,
    "place-map": ("noun.artifact", "noun.location", "noun.object"),
    "place-geographic": ("noun.object", "noun.location"),
    "place-building": ("noun.artifact",),
    "place-religious": ("noun.artifact",),
    "place-other": ("noun.artifact", "noun.object", "noun.location"),
    "hotel": _ARTIFACT,
    "transport-ground": _ARTIFACT,
    "transport-water": _ARTIFACT,
    "transport-air": _ARTIFACT,
    "time": _ARTIFACT,
    "sky & weather": ("noun.phenomenon", "noun.object", "noun.artifact"),
    "event": ("noun.artifact", "noun.act", "noun.event"),
    "award-medal": _ARTIFACT,
    "sport": ("noun.artifact", "noun.act"),
    "game": ("noun.artifact", "noun.act"),
    "arts & crafts": _ARTIFACT,
    "clothing": _ARTIFACT,
    "sound": _ARTIFACT,
    "music": ("noun.artifact", "noun.communication"),
    "musical-instrument": _ARTIFACT,
    "phone": _ARTIFACT,
    "computer": _ARTIFACT,
    "light & video": _ARTIFACT,
    "book-paper": ("noun.artifact", "noun.communication"),
    "money": ("noun.artifact", "noun.possession"),
    "mail": ("noun.artifact", "noun.communication"),
    "writing": _ARTIFACT,
    "office": _ARTIFACT,
    "lock": _ARTIFACT,
    "tool": _ARTIFACT,
    "science": ("noun.artifact", "noun.substance"),
    "medical": ("noun.artifact",),
    "household": _ARTIFACT,
    "other-object": _ARTIFACT,
    "person-role": ("noun.person",),
    "person-fantasy": ("noun.person",),
    "person": ("noun.person",),
    "person-activity": ("noun.act",),
    "person-sport": ("noun.act",),
    "body-parts": ("noun.body",),
    "family": ("noun.group",),
    "face-costume": ("noun.person", "noun.artifact"),
    "religion": ("noun.artifact",),
    "zodiac": ("noun.object",),
    "alphanum": _SYMBOL,
    "punctuation": _SYMBOL,
    "math": _SYMBOL,
    "currency": _SYMBOL,
    "geometric": ("noun.shape",),
    "flag": ("noun.artifact",),
    "subdivision-flag": ("noun.location",),
    "country-flag": ("noun.location", "noun.group"),
}

_GENERIC = {"face", "sign", "symbol", "button", "mark", "emoji"}
_COUNTRY = re.compile(r"\b(republic|kingdom|country|monarchy|principality|sultanate|emirate|nation|federation|"
                      r"commonwealth|grand duchy|confederation|union)\b")
_TERRITORY = re.compile(r"\b(islands?|archipelago|territory|colony|dependency|protectorate|region|peninsula)\b")
_NOT_COUNTRY = re.compile(r"^(a |an |the )?(state|city|town|port|river|capital|county|province)\b|"
                          r"\bstate (in|of) the united states\b|\bunited states state\b")
#: CLDR country names whose WordNet lemma differs (WordNet 3.0 is from 2006)
COUNTRY_ALIASES = {
    "cote d'ivoire": "Ivory Coast", "czechia": "Czech Republic", "myanmar (burma)": "Myanmar",
    "congo - kinshasa": "Democratic Republic of the Congo", "congo - brazzaville": "Republic of the Congo",
    "hong kong sar china": "Hong Kong", "macao sar china": "Macao", "turkiye": "Turkey",
    "north macedonia": "Macedonia", "eswatini": "Swaziland", "timor-leste": "East Timor",
    "cape verde": "Cape Verde", "vatican city": "Vatican City", "sao tome and principe": "Sao Tome and Principe",
    "st. vincent and grenadines": "Saint Vincent and the Grenadines", "united states": "United States",
    "united kingdom": "United Kingdom", "micronesia": "Federated States of Micronesia",
    "palestinian territories": "", "european union": "European Union", "united nations": "United Nations",
    "bosnia and herzegovina": "Bosnia and Herzegovina", "the bahamas": "Bahamas", "bahamas": "Bahamas",
    "gambia": "Gambia", "the gambia": "Gambia", "south korea": "South Korea", "north korea": "North Korea",
}


@dataclass(slots=True)
class Mapping:
    code: str  # the base emoji
    label: str
    synset: str
    lemma: str  # the name that matched
    how: str  # "label" | "name" | "gender-free label" | "without generic word" | "short name" | "country"


def _ascii(text: str) -> str:
    text = text.replace("’", "'").replace("&", "and")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def name_candidates(emoji: Emoji) -> list[tuple[str, str]]:
    """Names to look up, in order, with how each was made."""
    label = _ascii(emoji.label.lower())
    name = _ascii(emoji.name.lower())
    found: list[tuple[str, str]] = []

    def add(text: str, how: str) -> None:
        text = re.sub(r"\s+", " ", text).strip(" -")
        if len(text) >= 3 and not any(text == t for t, _ in found):
            found.append((text, how))

    if ":" in label:
        return found  # "man: red hair", "family: man, boy": no single word names them
    add(label, "label")
    add(name, "name")
    add(" ".join(w for w in label.split() if w not in GENDER_WORDS), "gender-free label")
    for text in (label, name):
        words = text.split()
        if len(words) > 1 and (words[-1] in _GENERIC or words[0] in _GENERIC):
            add(" ".join(w for w in words if w not in _GENERIC), "without generic word")
    for short in emoji.short_names:
        add(re.sub(r"\d+$", "", short.replace("_", " ")), "short name")
    return found


def _country_name(label: str) -> str | None:
    if not label.lower().startswith("flag:"):
        return None
    country = _ascii(label.split(":", 1)[1].strip())
    key = country.lower()
    if key in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[key] or None
    return re.sub(r"^St\. ", "Saint ", country)


def map_country(wordnet: WordNet, label: str) -> tuple[Synset, str] | None:
    country = _country_name(label)
    if not country:
        return None
    senses = [s for s in wordnet.senses(country) if s.lexname in ("noun.location", "noun.group")]
    ranked = []
    for order, synset in enumerate(senses):
        definition = synset.definition.lower()
        if _NOT_COUNTRY.search(definition):
            continue
        if _COUNTRY.search(definition):
            ranked.append((0, order, synset))
        elif _TERRITORY.search(definition):
            ranked.append((1, order, synset))
    if not ranked:
        return None
    return min(ranked, key=lambda r: r[:2])[2], country


def map_emoji(wordnet: WordNet, emoji: Emoji) -> Mapping | None:
    """The confident WordNet mapping of one base emoji, or None."""
    allowed = SUBCATEGORY_LEXNAMES.get(emoji.subcategory)
    if not allowed or emoji.is_variant:
        return None
    if emoji.subcategory in ("country-flag", "subdivision-flag"):
        found = map_country(wordnet, emoji.label)
        if found is None:
            return None
        synset, country = found
        return Mapping(emoji.code, emoji.label, synset.id, country, "country")
    heads = head_phrases(emoji)
    for text, how in name_candidates(emoji):
        senses = wordnet.senses(text)
        # the first lexicographer file listed wins ("peach" the fruit, noun.food, over the tree)
        fitting = sorted((s for s in senses if s.lexname in allowed), key=lambda s: allowed.index(s.lexname))
        if not fitting:
            continue
        if how in ("label", "name"):
            return Mapping(emoji.code, emoji.label, fitting[0].id, text, how)
        # a shortened name must be the label's head noun, in a common sense, not a specialist one
        if text in heads and senses.index(fitting[0]) <= 2 and not fitting[0].definition.startswith("("):
            return Mapping(emoji.code, emoji.label, fitting[0].id, text, how)
    return None


def head_phrases(emoji: Emoji) -> set[str]:
    """The label's possible head nouns: its word suffixes ("red apple" -> "apple"), the same before
    "with" ("fish cake with swirl" -> "fish cake"), singular forms, and the words run together."""
    heads = set()
    for text in (_ascii(emoji.label.lower()), _ascii(emoji.name.lower())):
        text = re.split(r"\b(?:with|without)\b", text)[0].strip()
        words = [w for w in text.split() if w not in GENDER_WORDS and w not in _GENERIC]
        for i in range(len(words)):
            phrase = " ".join(words[i:])
            heads.add(phrase)
            heads.add(re.sub(r"s$", "", phrase))
        heads.add("".join(words))
    return heads


def map_all(wordnet: WordNet, emoji: dict[str, Emoji]) -> dict[str, Mapping]:
    """``{base code: Mapping}`` for every base emoji that maps with confidence."""
    mappings = {}
    for code, item in sorted(emoji.items()):
        if item.is_variant:
            continue
        mapping = map_emoji(wordnet, item)
        if mapping is not None:
            mappings[code] = mapping
    return mappings
