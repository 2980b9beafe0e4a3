"""Stage-1 language-only pairs from WordNet, in SimCSE's NLI csv shape: ``sent0,sent1,hard_neg``.

Two pair kinds per synset: (an example sentence, the definition) and (the lemma set, the
definition); the hard negative is the definition of a sibling synset (a co-hyponym: "a lion" for "a
tiger"), or of the next synset of the same lexicographer file when there is no sibling. Every synset
of a val/test concept, every synset that shares a lemma with one, and every pair whose hard negative
is such a synset is left out, so nothing of a held-out concept is seen in stage 1.
"""

from __future__ import annotations

import csv
import io
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from lamra.data.mbeir import MBEIRFormatError, atomic_write_text
from lamra.data.wordnet import Synset, WordNet

HEADER = ("sent0", "sent1", "hard_neg")


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


def write_nli_csv(path: str | os.PathLike, pairs: Iterable[tuple[str, str, str]]) -> int:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    count = 0
    for pair in pairs:
        writer.writerow(pair)
        count += 1
    atomic_write_text(path, buffer.getvalue())
    return count


def read_nli_csv(path: str | os.PathLike) -> Iterator[tuple[str, str, str | None]]:
    """Yield ``(sent0, sent1, hard_neg)`` from a SimCSE-style csv (``hard_neg`` None when absent)."""
    path = Path(path)
    if not path.is_file():
        raise MBEIRFormatError(f"{path}: no such file")
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:2]] != ["sent0", "sent1"]:
            raise MBEIRFormatError(f"{path}:1: expected a header 'sent0,sent1[,hard_neg]', got {header!r}")
        has_negative = len(header) > 2 and header[2].strip() == "hard_neg"
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise MBEIRFormatError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
            if not row[0].strip() or not row[1].strip():
                raise MBEIRFormatError(f"{path}:{line}: empty sentence")
            yield row[0], row[1], (row[2] if has_negative and row[2].strip() else None)
