"""PocketBEIR: a small real benchmark in M-BEIR's exact layout, built offline from emoji and WordNet.

``build_pocketbeir(out_dir, sources_dir)`` writes, under ``out_dir``: the eight task datasets
(queries per split, a local pool per task holding its candidates from every split, qrels), the global
pools, the instructions TSV, the union training file, the stage-1 text pairs
(``textpairs/wordnet_nli_train.csv``), the used images (``images/{google,twitter}/*.png``) and a dataset
card (``README.md``). The same seed gives byte-identical files (the card's build-time line aside).

How each task is made (per concept split; see ``lamra.pocketbeir.concepts``):

- t -> i (EmojiName): an emoji's CLDR label, and its old Unicode name, -> its Google image.
- t -> t (WordNetPassage): an example sentence of a mapped synset with its lemmas masked, or the
  definition of one of its hyponyms (lemmas masked) -> the synset's passage (lemmas and definition,
  no examples).
- t -> (i,t) (EmojiDesc): a synset definition, or a few of the emoji's keyword tags, with the names
  masked -> the (Google image, label) of the emoji.
- i -> t (EmojiCaption): a Google or Twitter image -> the label.
- i -> i (EmojiVendor): a Google image -> the Twitter image of the same emoji.
- (i,t) -> t (EmojiWiki): an image (either vendor) + a question -> the WordNet passage (OVEN-like).
- (i,t) -> i (EmojiVariant): a Google image + "with dark skin tone" / "the woman version" -> the
  Twitter image of that variant; every variant of the emoji is in the pool (CIRR-like).
- (i,t) -> (i,t) (EmojiQA): a Google image + a question -> the (Twitter image, passage) pair.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lamra.atomic_io import atomic_write, atomic_write_text
from lamra.data import mbeir
from lamra.data.mbeir import IMAGE, IMAGE_TEXT, TEXT, InstructionRow, MBEIRCandidate, MBEIRQuery
from lamra.data.nli_csv import write_nli_csv
from lamra.pocketbeir.concepts import Concept, build_concepts, fixture_concepts
from lamra.pocketbeir.emoji import Emoji, load_emoji, tone_phrase
from lamra.pocketbeir.mapping import Mapping, map_all
from lamra.pocketbeir.textpairs import held_out_synsets, nli_pairs
from lamra.pocketbeir.wordnet import Synset, WordNet

TEXTPAIRS_RELPATH = "textpairs/wordnet_nli_train.csv"
MASK = "___"

#: at least four paraphrases per task, in the style of the paper's Table 4
INSTRUCTIONS: dict[str, list[str]] = {
    "EmojiName": [
        "Find the emoji that matches this name.",
        "Retrieve the emoji image described by the given name.",
        "Identify the emoji picture for the everyday name given.",
        "Show me the emoji that this name refers to.",
        "Select the emoji image that corresponds to the given name.",
    ],
    "WordNetPassage": [
        "Retrieve the dictionary entry of the concept this text is about.",
        "Find the dictionary passage for the word that fills the blank or that the definition describes.",
        "Identify the concept described by this sentence and retrieve its dictionary entry.",
        "Which dictionary entry does this text refer to? Retrieve it.",
    ],
    "EmojiDesc": [
        "Find the emoji, with its name, that fits this description.",
        "Retrieve an emoji image and its name matching the given description.",
        "Identify the emoji and its name described by these words.",
        "Match this description to an emoji picture together with its name.",
    ],
    "EmojiCaption": [
        "Find the name of the emoji shown.",
        "Retrieve the everyday name for this emoji image.",
        "Identify the caption that names this emoji.",
        "What is this emoji called? Retrieve its name.",
    ],
    "EmojiVendor": [
        "Find the same emoji drawn in another style.",
        "Retrieve the emoji image that depicts the same emoji as this one.",
        "Identify the matching emoji from a different design set.",
        "Find another rendering of this emoji.",
    ],
    "EmojiWiki": [
        "Retrieve the dictionary entry that answers the question about this image.",
        "Find the encyclopedic passage about what the image shows, as the question asks.",
        "Answer the question about this emoji by retrieving the matching dictionary passage.",
        "Identify the concept in the image and retrieve its definition.",
    ],
    "EmojiVariant": [
        "Retrieve the emoji that matches the reference emoji after the requested change.",
        "Find the variant of this emoji described by the modification.",
        "Apply the described change to the emoji and find the resulting image.",
        "Identify the emoji image that differs from this one as the text says.",
    ],
    "EmojiQA": [
        "Retrieve an emoji image with its dictionary entry that answers the question about this image.",
        "Find a picture and passage pair about the concept shown, as the question asks.",
        "Answer the question about this emoji with another picture of it and its dictionary entry.",
        "Identify the concept in the image and retrieve an image-and-definition pair about it.",
    ],
}

WIKI_QUESTIONS = ["What is this?", "What does this emoji show?", "What is the thing shown in this picture?",
                  "Can you tell me what this is?"]
FLAG_QUESTIONS = ["Which country does this flag belong to?", "What country is this the flag of?",
                  "Whose flag is this?"]
QA_QUESTIONS = ["What is this, and what does it mean?", "Show me this in another picture and define it.",
                "Tell me about what this emoji depicts.", "What is shown here? Find a picture and a definition."]
QA_FLAG_QUESTIONS = ["Which country is this flag for? Show its flag and describe the country.",
                     "Tell me about the country of this flag."]
GENDER_PHRASES = {"man": "the man version", "woman": "the woman version", "person": "the gender-neutral version"}


# --- small helpers ------------------------------------------------------------------------------


def words_of(text: str | None) -> str:
    """Lower-case alphanumeric tokens joined by single spaces (for leak checks)."""
    return " ".join(re.findall(r"[a-z0-9]+", (text or "").lower()))


def contains_text(query: str | None, positive: str | None) -> bool:
    """Does ``query`` contain ``positive`` word for word (case and punctuation ignored)?"""
    q, p = words_of(query), words_of(positive)
    return bool(p) and f" {p} " in f" {q} "


def mask_terms(text: str, terms: list[str]) -> str:
    """Replace every term (whole words, with a plural ending) by ``___``."""
    for term in sorted({t.lower() for t in terms if len(t) >= 2}, key=len, reverse=True):
        pattern = r"(?<![\w])" + re.escape(term).replace(r"\ ", r"[\s-]+") + r"(?:s|es|'s)?(?![\w])"
        text = re.sub(pattern, MASK, text, flags=re.IGNORECASE)
    return text


def _json(value: dict) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


CandKey = tuple[str, str | None, str | None]  # (modality, txt, img_path)


@dataclass
class QuerySpec:
    split: str
    txt: str | None
    img: str | None
    positives: list[CandKey]
    negatives: list[CandKey] = field(default_factory=list)
    src: dict = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return IMAGE_TEXT if self.txt and self.img else (IMAGE if self.img else TEXT)


@dataclass
class TaskSpec:
    name: str
    pool: dict[CandKey, dict] = field(default_factory=dict)  # key -> src_content, in pool order
    queries: list[QuerySpec] = field(default_factory=list)

    def add(self, key: CandKey, src: dict) -> CandKey:
        self.pool.setdefault(key, src)
        return key


# --- the material -------------------------------------------------------------------------------


class Material:
    """Emoji, WordNet, mappings and concepts, with the lookups the task makers share."""

    def __init__(self, sources: Path, seed: int, fixture: bool, wordnet_dir: Path | None = None):
        self.sources = sources
        self.seed = seed
        self.emoji, self.folders = load_emoji(sources)
        self.wordnet = WordNet(wordnet_dir or sources / "wordnet", pos="n" if fixture else "nvar")
        self.all_mappings: dict[str, Mapping] = map_all(self.wordnet, self.emoji)
        concepts = build_concepts(self.emoji, self.all_mappings, self.wordnet, seed)
        self.all_concepts = concepts
        self.concepts: list[Concept] = fixture_concepts(concepts, self.emoji) if fixture else concepts
        self.concept_of: dict[str, Concept] = {}
        for concept in self.concepts:
            for code in concept.codes:
                self.concept_of[code] = concept
                for variant in self.emoji[code].variants:
                    self.concept_of[variant] = concept
        self.mappings = {c: m for c, m in self.all_mappings.items() if c in self.concept_of}
        self.images: dict[str, Path] = {}  # relpath in the benchmark -> source file

    def bases(self) -> list[Emoji]:
        return [self.emoji[c] for concept in self.concepts for c in concept.codes]

    def members(self, base: Emoji) -> list[Emoji]:
        return [base] + [self.emoji[v] for v in base.variants]

    def split(self, code: str) -> str:
        return self.concept_of[code].split

    def image(self, e: Emoji, vendor: str) -> str:
        relpath = f"images/{vendor}/{Path(e.images[vendor]).name}"
        self.images[relpath] = self.folders[vendor] / e.images[vendor]
        return relpath

    def synset(self, code: str) -> Synset | None:
        mapping = self.mappings.get(self.emoji[code].base)
        return self.wordnet[mapping.synset] if mapping else None

    def src(self, e: Emoji, **extra) -> dict:
        return {"emoji": e.code, "concept": self.concept_of[e.code].key, **extra}

    def distractor_synsets(self, used_as_queries: set[str]) -> list[Synset]:
        """Up to three siblings of each mapped synset, as extra passages in the text pools."""
        mapped = {m.synset for m in self.mappings.values()}
        chosen: dict[str, Synset] = {}
        for synset_id in sorted(mapped):
            siblings = [s for s in self.wordnet.siblings(synset_id)
                        if s.id not in mapped and s.id not in used_as_queries and s.lexname.startswith("noun.")]
            for sibling in siblings[:3]:
                chosen.setdefault(sibling.id, sibling)
        return [chosen[k] for k in sorted(chosen)]


# --- the eight tasks ----------------------------------------------------------------------------


def task_emoji_name(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("EmojiName")
    labels = {words_of(e.label) for e in m.emoji.values()}
    for base in m.bases():
        for e in m.members(base):
            key = task.add((IMAGE, None, m.image(e, "google")), m.src(e, vendor="google"))
            task.queries.append(QuerySpec(m.split(e.code), e.label, None, [key], src=m.src(e, name="label")))
            if not e.is_variant and words_of(e.name) not in labels and e.subcategory != "country-flag":
                task.queries.append(QuerySpec(m.split(e.code), e.name, None, [key], src=m.src(e, name="unicode")))
    return task


def task_caption(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("EmojiCaption")
    for base in m.bases():
        key = task.add((TEXT, base.label, None), m.src(base))
        for vendor in ("google", "twitter"):
            task.queries.append(QuerySpec(m.split(base.code), None, m.image(base, vendor), [key],
                                          src=m.src(base, vendor=vendor)))
    return task


def task_vendor(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("EmojiVendor")
    for base in m.bases():
        members = m.members(base)
        keys = [task.add((IMAGE, None, m.image(e, "twitter")), m.src(e, vendor="twitter")) for e in members]
        for e, key in zip(members, keys):
            others = [k for k in keys if k != key]
            task.queries.append(QuerySpec(m.split(e.code), None, m.image(e, "google"), [key],
                                          sorted(rng.sample(others, min(3, len(others)))),
                                          src=m.src(e, vendor="google")))
    return task


def task_desc(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("EmojiDesc")
    by_synset: dict[str, list[Emoji]] = {}
    keys: dict[str, CandKey] = {}
    for base in m.bases():
        keys[base.code] = task.add((IMAGE_TEXT, base.label, m.image(base, "google")), m.src(base, vendor="google"))
        synset = m.synset(base.code)
        if synset is not None:
            by_synset.setdefault(synset.id, []).append(base)
    for synset_id, emojis in by_synset.items():
        synset = m.wordnet[synset_id]
        terms = synset.lemmas + [e.base_label for e in emojis] + [e.name for e in emojis]
        text = mask_terms(synset.definition, terms)
        if len(words_of(text).split()) >= 3:
            task.queries.append(QuerySpec(m.split(emojis[0].code), text, None, [keys[e.code] for e in emojis],
                                          src=m.src(emojis[0], synset=synset_id, kind="definition")))
    for base in m.bases():
        label_words = set(words_of(base.label).split()) | set(words_of(base.name).split())
        synset = m.synset(base.code)
        lemma_words = set(words_of(" ".join(synset.lemmas)).split()) if synset else set()
        tags = [t for t in base.tags if len(t) > 2 and not set(words_of(t).split()) & (label_words | lemma_words)
                and words_of(t).rstrip("s") not in {w.rstrip("s") for w in label_words | lemma_words}]
        if len(tags) >= 3:
            task.queries.append(QuerySpec(m.split(base.code), "keywords: " + ", ".join(tags[:5]), None,
                                          [keys[base.code]], src=m.src(base, kind="tags")))
    return task


def _passage_pool(task: TaskSpec, m: Material, examples: bool, used_as_queries: set[str]) -> dict[str, CandKey]:
    keys: dict[str, CandKey] = {}
    for base in m.bases():
        synset = m.synset(base.code)
        if synset is not None and synset.id not in keys:
            keys[synset.id] = task.add((TEXT, synset.passage(examples), None),
                                       {"synset": synset.id, "concept": m.concept_of[base.code].key})
    for synset in m.distractor_synsets(used_as_queries):
        task.add((TEXT, synset.passage(examples), None), {"synset": synset.id, "distractor": True})
    return keys


def task_passage(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("WordNetPassage")
    hyponym_queries = {h for c in m.concepts for h in c.hyponyms}
    keys = _passage_pool(task, m, examples=False, used_as_queries=hyponym_queries)
    for concept in m.concepts:
        for synset_id in concept.synsets:
            synset = m.wordnet[synset_id]
            key = keys[synset_id]
            texts = [(e, "example") for e in synset.examples]
            children = [h for h in concept.hyponyms if synset_id in m.wordnet[h].hypernyms]
            for child in sorted(rng.sample(children, min(4, len(children)))):
                texts.append((m.wordnet[child].definition, "hyponym:" + child))
            for text, kind in texts:
                masked = mask_terms(text, synset.lemmas)
                if len(words_of(masked).split()) >= 3:
                    task.queries.append(QuerySpec(concept.split, masked, None, [key],
                                                  src={"synset": synset_id, "concept": concept.key, "kind": kind}))
    return task


def task_wiki(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("EmojiWiki")
    keys = _passage_pool(task, m, examples=True, used_as_queries=set())
    for base in m.bases():
        synset = m.synset(base.code)
        if synset is None:
            continue
        questions = FLAG_QUESTIONS if base.subcategory == "country-flag" else WIKI_QUESTIONS
        shown = [(base, "google"), (base, "twitter")]
        if base.variants:
            shown.append((m.emoji[rng.choice(base.variants)], rng.choice(("google", "twitter"))))
        for e, vendor in shown:
            task.queries.append(QuerySpec(m.split(e.code), rng.choice(questions), m.image(e, vendor),
                                          [keys[synset.id]], src=m.src(e, vendor=vendor, synset=synset.id)))
    return task


def task_qa(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("EmojiQA")
    by_synset: dict[str, list[CandKey]] = {}
    for base in m.bases():
        synset = m.synset(base.code)
        if synset is not None:
            key = task.add((IMAGE_TEXT, synset.passage(True), m.image(base, "twitter")),
                           m.src(base, vendor="twitter", synset=synset.id))
            by_synset.setdefault(synset.id, []).append(key)
    for base in m.bases():
        synset = m.synset(base.code)
        if synset is None:
            continue
        questions = QA_FLAG_QUESTIONS if base.subcategory == "country-flag" else QA_QUESTIONS
        shown = [base] + ([m.emoji[rng.choice(base.variants)]] if base.variants else [])
        for e in shown:
            task.queries.append(QuerySpec(m.split(e.code), rng.choice(questions), m.image(e, "google"),
                                          by_synset[synset.id], src=m.src(e, vendor="google", synset=synset.id)))
    return task


def variant_change(source: Emoji, target: Emoji) -> str | None:
    """The text that turns ``source`` into ``target``, or None when no clear text does."""
    if any(len(set(e.tones)) > 1 for e in (source, target)):
        return None  # mixed tones ("light and dark"): which person has which is not said
    parts = []
    if source.base != target.base:
        if source.gender is None or target.gender is None or source.gender == target.gender:
            return None
        if source.gender_stem != target.gender_stem:
            return None
        parts.append(GENDER_PHRASES[target.gender])
    if source.tones != target.tones:
        parts.append(f"with {tone_phrase(target.tones)}" if target.tones else "without a skin tone, in the default yellow")
    return ", ".join(parts) if parts else None


def task_variant(m: Material, rng: random.Random) -> TaskSpec:
    task = TaskSpec("EmojiVariant")
    for concept in m.concepts:
        members = [v for code in concept.codes for v in m.members(m.emoji[code])]
        if len(members) < 2:
            continue
        keys = {e.code: task.add((IMAGE, None, m.image(e, "twitter")), m.src(e, vendor="twitter")) for e in members}
        for source in members:
            targets = [(t, text) for t in members if t is not source and (text := variant_change(source, t))]
            for target, text in sorted(rng.sample(targets, min(2, len(targets))), key=lambda tt: tt[0].code):
                others = [keys[e.code] for e in members if e is not target and e is not source]
                task.queries.append(QuerySpec(concept.split, text, m.image(source, "google"), [keys[target.code]],
                                              sorted(rng.sample(others, min(3, len(others)))),
                                              src=m.src(source, vendor="google", target=target.code)))
    return task


TASK_MAKERS = {
    "EmojiName": task_emoji_name,
    "WordNetPassage": task_passage,
    "EmojiDesc": task_desc,
    "EmojiCaption": task_caption,
    "EmojiVendor": task_vendor,
    "EmojiWiki": task_wiki,
    "EmojiVariant": task_variant,
    "EmojiQA": task_qa,
}


# --- writing ------------------------------------------------------------------------------------


@dataclass
class BuildStats:
    queries: dict[str, Counter] = field(default_factory=dict)  # dataset -> split -> count
    pools: dict[str, int] = field(default_factory=dict)
    global_pool: int = 0
    images: int = 0
    text_pairs: int = 0
    dropped_leaks: int = 0
    written: set[str] = field(default_factory=set)  # relpaths of every file of this build

MANAGED_DIRS = ("query", "cand_pool", "qrels", "instructions", "images", "textpairs")


def _write_tasks(out: Path, specs: dict[str, TaskSpec], seed: int, progress) -> BuildStats:
    stats = BuildStats()
    dids: dict[str, dict[CandKey, str]] = {}
    twins: dict[CandKey, list[str]] = {}
    pools: dict[str, list[MBEIRCandidate]] = {}
    for name, spec in specs.items():
        dataset_id, task_id = mbeir.POCKETBEIR_DATASETS[name]
        dids[name] = {}
        pools[name] = []
        for n, (key, src) in enumerate(spec.pool.items(), 1):
            did = f"{dataset_id}:{n}"
            dids[name][key] = did
            twins.setdefault(key, []).append(did)
            modality, txt, img = key
            pools[name].append(MBEIRCandidate(did, txt, img, modality, _json(src)))
    union_train: list[MBEIRQuery] = []
    for name, spec in specs.items():
        dataset_id, task_id = mbeir.POCKETBEIR_DATASETS[name]
        stats.pools[name] = mbeir.write_jsonl(out / mbeir.local_pool_relpath(name, task_id), pools[name])
        stats.written.add(mbeir.local_pool_relpath(name, task_id))
        stats.queries[name] = Counter()
        number = 0
        for split in mbeir.SPLITS:
            records, qrels = [], {}
            for q in spec.queries:
                if q.split != split:
                    continue
                if any(contains_text(q.txt, key[1]) for key in q.positives):
                    stats.dropped_leaks += 1
                    continue
                number += 1
                positives = sorted({d for key in q.positives for d in twins[key]}, key=mbeir._id_key)
                negatives = [dids[name][key] for key in q.negatives]
                record = MBEIRQuery(f"{dataset_id}:{number}", q.txt, q.img, q.modality, _json(q.src),
                                    positives, negatives, task_id)
                records.append(record)
                qrels[record.qid] = positives
            mbeir.write_jsonl(out / mbeir.query_relpath(name, task_id, split), records)
            mbeir.write_qrels(out / mbeir.qrels_relpath(name, task_id, split), qrels, task_id)
            stats.written |= {mbeir.query_relpath(name, task_id, split), mbeir.qrels_relpath(name, task_id, split)}
            stats.queries[name][split] = len(records)
            if split == "train":
                union_train.extend(records)
        progress.update(1)
    random.Random(f"union:{seed}").shuffle(union_train)
    mbeir.write_jsonl(out / mbeir.UNION_TRAIN_RELPATH, union_train)
    union = [c for name in specs for c in pools[name]]
    for split in mbeir.SPLITS:
        stats.global_pool = mbeir.write_jsonl(out / mbeir.global_pool_relpath(split), union)
        stats.written.add(mbeir.global_pool_relpath(split))
    rows = []
    for name in specs:
        dataset_id, task_id = mbeir.POCKETBEIR_DATASETS[name]
        qmod, cmod = mbeir.TASKS[task_id]
        rows.append(InstructionRow(qmod, cmod, name, str(dataset_id), INSTRUCTIONS[name]))
    mbeir.write_instructions(out / mbeir.INSTRUCTIONS_RELPATH, rows)
    stats.written |= {mbeir.INSTRUCTIONS_RELPATH, mbeir.UNION_TRAIN_RELPATH}
    return stats


def _remove_stale(out: Path, written: set[str]) -> None:
    """Delete files a previous build left in the folders this builder owns."""
    for folder in MANAGED_DIRS:
        for path in sorted((out / folder).rglob("*")) if (out / folder).is_dir() else []:
            if path.is_file() and path.relative_to(out).as_posix() not in written:
                path.unlink()


def _copy_images(out: Path, images: dict[str, Path], progress) -> int:
    for relpath in sorted(images):
        target, source = out / relpath, images[relpath]
        if not target.is_file() or target.stat().st_size != source.stat().st_size:
            atomic_write(target, lambda temp: shutil.copyfile(source, temp))
    progress.update(1)
    return len(images)


def dataset_checksum(out_dir: str | os.PathLike) -> str:
    """SHA-256 over every file of a build (paths and bytes), the card (README.md) left out."""
    out = Path(out_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relpath = path.relative_to(out).as_posix()
        if relpath == "README.md":
            continue
        digest.update(relpath.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def default_sources_dir() -> Path:
    return Path(os.environ.get("LAMRA_HOME", Path.home() / ".cache" / "lamra")).expanduser() / "sources"


def default_out_dir(fixture: bool = False) -> Path:
    home = Path(os.environ.get("LAMRA_HOME", Path.home() / ".cache" / "lamra")).expanduser()
    return home / ("pocketbeir-fixture" if fixture else "pocketbeir")


def build_pocketbeir(out_dir: str | os.PathLike | None = None, sources_dir: str | os.PathLike | None = None,
                     seed: int = 0, fixture: bool = False, wordnet_dir: str | os.PathLike | None = None,
                     show_progress: bool = True) -> Path:
    """Build PocketBEIR (or, with ``fixture``, its <=100-emoji fixture) into ``out_dir``; returns it.

    ``sources_dir`` holds what scripts/install_data_deps.sh fetched (default ``$LAMRA_HOME/sources``);
    ``wordnet_dir`` overrides where WordNet's data files are (default ``sources_dir/wordnet``).
    """
    from lamra.pocketbeir.card import render_card

    started = time.perf_counter()
    out = Path(out_dir).expanduser() if out_dir else default_out_dir(fixture)
    sources = Path(sources_dir).expanduser() if sources_dir else default_sources_dir()
    steps = 3 + len(TASK_MAKERS) * 2
    with tqdm(total=steps, desc="pocketbeir", unit="step", disable=not show_progress) as progress:
        progress.set_postfix_str("reading sources")
        m = Material(sources, seed, fixture, Path(wordnet_dir).expanduser() if wordnet_dir else None)
        progress.update(1)
        specs = {}
        for name, maker in TASK_MAKERS.items():
            progress.set_postfix_str(name)
            specs[name] = maker(m, random.Random(f"{name}:{seed}"))
            progress.update(1)
        out.mkdir(parents=True, exist_ok=True)
        progress.set_postfix_str("writing")
        stats = _write_tasks(out, specs, seed, progress)
        progress.set_postfix_str("images")
        stats.images = _copy_images(out, m.images, progress)
        progress.set_postfix_str("text pairs")
        held_out = [s for c in m.all_concepts if c.split != "train" for s in c.all_synsets]
        exclude = held_out_synsets(m.wordnet, held_out)
        pairs = nli_pairs(m.wordnet, exclude, seed, limit=5000 if fixture else None)
        stats.text_pairs = write_nli_csv(out / TEXTPAIRS_RELPATH, pairs)
        stats.written |= set(m.images) | {TEXTPAIRS_RELPATH}
        _remove_stale(out, stats.written)
        progress.update(1)
    elapsed = time.perf_counter() - started
    atomic_write_text(out / "README.md", render_card(m, specs, stats, seed=seed, fixture=fixture,
                                                           build_seconds=elapsed, held_out=len(exclude)))
    return out
