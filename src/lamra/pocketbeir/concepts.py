"""Concepts and the one concept split shared by every PocketBEIR task and the stage-1 text pairs.

A concept is a base emoji with all its skin-tone variants, its gender variants ("man cook",
"woman cook", "cook") and every other emoji that maps to the same WordNet synset ("cat" and "cat
face"), together with those synsets and their direct hyponyms. A concept lands in train, val or test
by a hash of the seed and its key, so a concept keeps its split whatever else is built beside it
(the fixture build splits its concepts exactly as the full build does).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lamra.pocketbeir.emoji import Emoji, code_family
from lamra.pocketbeir.mapping import Mapping
from lamra.pocketbeir.wordnet import WordNet

SPLIT_FRACTIONS = (("test", 0.2), ("val", 0.1), ("train", 0.7))


@dataclass(slots=True)
class Concept:
    key: str  # the smallest base emoji code of the group
    codes: list[str]  # base emoji codes, in emoji order
    synsets: list[str]  # mapped synsets, in emoji order
    hyponyms: list[str] = field(default_factory=list)  # direct hyponyms of the mapped synsets
    split: str = "train"

    @property
    def all_synsets(self) -> list[str]:
        return self.synsets + self.hyponyms


def split_of(key: str, seed: int) -> str:
    value = int.from_bytes(hashlib.sha256(f"pocketbeir:{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for split, fraction in SPLIT_FRACTIONS:
        edge += fraction
        if value < edge:
            return split
    return "train"


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def build_concepts(emoji: dict[str, Emoji], mappings: dict[str, Mapping], wordnet: WordNet,
                   seed: int) -> list[Concept]:
    """Group base emoji into concepts and split them; a hyponym claimed by two concepts is dropped."""
    bases = sorted((e for e in emoji.values() if not e.is_variant), key=lambda e: (e.sort_order, e.code))
    groups = _UnionFind()
    gendered_stems = {e.gender_stem for e in bases if e.gender_stem != " ".join(e.base_label.lower().split())}
    for e in bases:
        groups.find(e.code)
        groups.union(e.code, "family:" + code_family(e.code))
        if e.gender_stem in gendered_stems and e.gender is not None:
            groups.union(e.code, "stem:" + e.gender_stem)
        if e.code in mappings:
            groups.union(e.code, "synset:" + mappings[e.code].synset)

    members: dict[str, list[Emoji]] = {}
    for e in bases:
        members.setdefault(groups.find(e.code), []).append(e)
    concepts = []
    for group in members.values():
        codes = [e.code for e in group]
        synsets = list(dict.fromkeys(mappings[c].synset for c in codes if c in mappings))
        key = min(codes)
        concepts.append(Concept(key=key, codes=codes, synsets=synsets, split=split_of(key, seed)))
    concepts.sort(key=lambda c: (emoji[c.codes[0]].sort_order, c.key))

    claimed: dict[str, set[int]] = {}
    mapped = {s for c in concepts for s in c.synsets}
    for index, concept in enumerate(concepts):
        for synset in concept.synsets:
            for hyponym in wordnet[synset].hyponyms:
                if hyponym not in mapped:
                    claimed.setdefault(hyponym, set()).add(index)
    for hyponym, owners in sorted(claimed.items()):
        if len(owners) == 1:
            concepts[next(iter(owners))].hyponyms.append(hyponym)
    return concepts


def fixture_concepts(concepts: list[Concept], emoji: dict[str, Emoji], max_emoji: int = 100) -> list[Concept]:
    """A small, fixed selection that still exercises every task: concepts taken round-robin from
    mapped / flag / skin-tone / gender / other kinds, per split, up to ``max_emoji`` base emoji."""

    def kind(c: Concept) -> str:
        first = emoji[c.codes[0]]
        if first.subcategory == "country-flag":
            return "flag"
        if len(c.codes) > 1 and any(emoji[x].variants for x in c.codes):
            return "gender"
        if any(emoji[x].variants for x in c.codes):
            return "skin"
        return "mapped" if c.synsets else "other"

    by_rank = sorted(concepts, key=lambda c: hashlib.sha256(f"fixture:{c.key}".encode()).hexdigest())
    queues: dict[tuple[str, str], list[Concept]] = {}
    for c in by_rank:
        if len(c.codes) <= 4:  # keep the fixture small: no big families
            queues.setdefault((c.split, kind(c)), []).append(c)
    order = [(s, k) for s in ("test", "train", "val") for k in ("mapped", "skin", "gender", "flag", "mapped", "other")]
    chosen: list[Concept] = []
    total = 0
    while any(queues.get(q) for q in order):
        for q in order:
            if queues.get(q):
                c = queues[q].pop(0)
                if total + len(c.codes) > max_emoji:
                    continue
                chosen.append(c)
                total += len(c.codes)
        if total >= max_emoji - 1:
            break
    chosen_keys = {c.key for c in chosen}
    return [c for c in concepts if c.key in chosen_keys]
