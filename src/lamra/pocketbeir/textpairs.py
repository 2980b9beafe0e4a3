"""Stage-1 language-only pairs from WordNet, as rows of SimCSE's NLI csv
(``lamra.data.nli_csv``): ``sent0,sent1,hard_neg``.

Two pair kinds per synset: (an example sentence, the definition) and (the lemma set, the
definition); the hard negative is the definition of a sibling synset (a co-hyponym: "a lion" for "a
tiger"), or of the next synset of the same lexicographer file when there is no sibling. Every synset
of a val/test concept, every synset that shares a lemma with one, and every pair whose hard negative
is such a synset is left out, so nothing of a held-out concept is seen in stage 1.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from lamra.pocketbeir.wordnet import Synset, WordNet


def held_out_synsets(wordnet: WordNet, synsets: Iterable[str]) -> set[str]:
    """The given synsets plus every synset sharing a lemma with one of them."""
    held = set(synsets)
    lemmas = {lemma.lower() for s in held for lemma in wordnet[s].lemmas}
    for synset in wordnet.synsets.values():
        if any(lemma.lower() in lemmas for lemma in synset.lemmas):
            held.add(synset.id)
    return held


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] if text else text


def nli_pairs(wordnet: WordNet, exclude: set[str], seed: int = 0, limit: int | None = None) -> list[tuple[str, str, str]]:
    """All pairs (shuffled with ``seed``), none touching an excluded synset; with ``limit``, the pairs
    of a random sample of synsets, cut to ``limit``."""
    rng = random.Random(f"textpairs:{seed}")
    usable = [s for s in wordnet.synsets.values() if s.id not in exclude and len(s.definition.split()) >= 3]
    usable_ids = {s.id for s in usable}
    children: dict[str, list[str]] = {}
    by_lexname: dict[str, list[Synset]] = {}
    for synset in usable:
        by_lexname.setdefault(synset.lexname, []).append(synset)
        for parent in synset.hypernyms:
            children.setdefault(parent, []).append(synset.id)
    chosen = usable if limit is None else rng.sample(usable, min(limit, len(usable)))
    position = {s.id: i for group in by_lexname.values() for i, s in enumerate(group)}
    pairs: list[tuple[str, str, str]] = []
    for synset in chosen:
        negative = None
        siblings = [c for p in synset.hypernyms for c in children.get(p, ()) if c != synset.id]
        for _ in range(3):
            if not siblings:
                break
            candidate = wordnet[rng.choice(siblings)]
            if candidate.definition != synset.definition and candidate.id in usable_ids:
                negative = candidate
                break
        if negative is None:
            group = by_lexname[synset.lexname]
            negative = group[(position[synset.id] + 1) % len(group)]
            if negative.id == synset.id:
                continue
        definition, hard = _sentence(synset.definition), _sentence(negative.definition)
        pairs.append((", ".join(synset.lemmas), definition, hard))
        for example in synset.examples:
            if len(example.split()) >= 3:
                pairs.append((_sentence(example), definition, hard))
    rng.shuffle(pairs)
    return pairs[:limit] if limit is not None else pairs
