"""WordNet 3.0 read straight from its ``data.*`` / ``index.*`` files (Debian ``wordnet-base``).

Only what the benchmark needs: synsets with their lexicographer file ("noun.animal"), lemmas,
definition, example sentences and hypernym / hyponym links, and each lemma's senses in WordNet's
frequency order (from the index files).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# The lexicographer files, by number (WordNet's lexnames(5WN)).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl"
).split()

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_QUOTED = re.compile(r'"([^"]*)"')


@dataclass(slots=True)
class Synset:
    id: str  # "n02121620"
    lexname: str  # "noun.animal"
    lemmas: list[str]  # ["cat", "true cat"]
    definition: str
    examples: list[str]
    hypernyms: list[str] = field(default_factory=list)
    hyponyms: list[str] = field(default_factory=list)

    @property
    def pos(self) -> str:
        return self.id[0]

    def passage(self, examples: bool = True) -> str:
        """``"cat, true cat: feline mammal ...; "domestic cats"."``: the concept as a dictionary entry."""
        text = f"{', '.join(self.lemmas)}: {self.definition}"
        if examples and self.examples:
            text += "; " + "; ".join(f'"{e}"' for e in self.examples)
        return text


def _split_gloss(gloss: str) -> tuple[str, list[str]]:
    examples = [e.strip() for e in _QUOTED.findall(gloss) if e.strip()]
    definition = _QUOTED.sub("", gloss)
    definition = re.sub(r"(\s*;\s*)+", "; ", definition).strip(" ;")
    return definition, examples


def _lemma_text(word: str) -> str:
    word = re.sub(r"\([a-z]+\)$", "", word)  # adjective markers such as "(a)", "(p)"
    return word.replace("_", " ")


class WordNet:
    """All synsets of WordNet in memory (~117k), with a lemma -> senses index."""

    def __init__(self, folder: str | os.PathLike, pos: str = "nvar"):
        self.folder = Path(folder)
        if not (self.folder / "data.noun").is_file():
            raise FileNotFoundError(f"WordNet data files not found in {str(self.folder)!r} "
                                    "(run scripts/install_data_deps.sh)")
        self.synsets: dict[str, Synset] = {}
        self._senses: dict[tuple[str, str], list[str]] = {}
        for p in pos:
            self._read_data(p)
            self._read_index(p)

    def _read_data(self, pos: str) -> None:
        with open(self.folder / f"data.{POS_FILES[pos]}", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("  "):
                    continue  # licence header
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                offset, lex_num, n_words = fields[0], int(fields[1]), int(fields[3], 16)
                words = [_lemma_text(fields[4 + 2 * i]) for i in range(n_words)]
                i = 4 + 2 * n_words
                n_pointers = int(fields[i])
                hypernyms, hyponyms = [], []
                for j in range(n_pointers):
                    symbol, target, target_pos = fields[i + 1 + 4 * j: i + 4 + 4 * j]
                    target_pos = "a" if target_pos == "s" else target_pos
                    if symbol in ("@", "@i"):
                        hypernyms.append(target_pos + target)
                    elif symbol in ("~", "~i"):
                        hyponyms.append(target_pos + target)
                definition, examples = _split_gloss(gloss.strip())
                synset_id = pos + offset
                self.synsets[synset_id] = Synset(synset_id, LEXNAMES[lex_num], words, definition, examples,
                                                 hypernyms, hyponyms)

    def _read_index(self, pos: str) -> None:
        path = self.folder / f"index.{POS_FILES[pos]}"
        if not path.is_file():  # without the index, senses are in file order
            for synset in self.synsets.values():
                if synset.pos == pos:
                    for lemma in synset.lemmas:
                        self._senses.setdefault((lemma.lower(), pos), []).append(synset.id)
            return
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("  "):
                    continue
                fields = line.split()
                lemma, n_synsets = fields[0].replace("_", " "), int(fields[2])
                offsets = fields[-n_synsets:]
                self._senses[(lemma.lower(), pos)] = [pos + o for o in offsets]

    def __len__(self) -> int:
        return len(self.synsets)

    def __getitem__(self, synset_id: str) -> Synset:
        return self.synsets[synset_id]

    def senses(self, lemma: str, pos: str = "n") -> list[Synset]:
        """The synsets of a lemma, most frequent sense first ("ice cream" and "ice_cream" alike)."""
        key = (lemma.strip().lower().replace("_", " "), pos)
        return [self.synsets[s] for s in self._senses.get(key, []) if s in self.synsets]

    def siblings(self, synset_id: str) -> list[Synset]:
        """Co-hyponyms: the other children of this synset's hypernyms, in file order."""
        synset = self.synsets[synset_id]
        seen, result = {synset_id}, []
        for parent in synset.hypernyms:
            for child in self.synsets[parent].hyponyms if parent in self.synsets else []:
                if child not in seen and child in self.synsets:
                    seen.add(child)
                    result.append(self.synsets[child])
        return result
