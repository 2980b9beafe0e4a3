"""PocketBEIR on its fixture build (<=100 emoji, built in seconds from $LAMRA_HOME/sources)."""

from __future__ import annotations

import json
import re

import pytest

from lamra.data import mbeir
from lamra.data.mbeir import MBEIRDataset
from lamra.pocketbeir.build import (
    MASK,
    TEXTPAIRS_RELPATH,
    build_pocketbeir,
    contains_text,
    dataset_checksum,
    default_sources_dir,
    mask_terms,
)
from lamra.data.nli_csv import read_nli_csv

# The README's set-up command (and so the test command) installs the sources; without them the
# build fails with a message naming the install script, as it should, rather than skipping.
SOURCES = default_sources_dir()
DATASETS = {name.lower(): (dataset_id, task) for name, (dataset_id, task) in mbeir.POCKETBEIR_DATASETS.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = build_pocketbeir(tmp_path_factory.mktemp("pocketbeir"), SOURCES, seed=0, fixture=True, show_progress=False)
    return MBEIRDataset(out)


@pytest.fixture(scope="module")
def queries(built):
    return {(split, name, task): list(built.queries(split, name, task))
            for split in mbeir.SPLITS for name, task in built.tasks(split)}


@pytest.fixture(scope="module")
def pool(built):
    return built.cand_pool_dict(split="test")


def concept_of(record) -> str | None:
    return json.loads(record.query_src_content).get("concept")


def test_all_eight_tasks_in_every_split(built, queries):
    for split in mbeir.SPLITS:
        assert built.tasks(split) == sorted(((n, t) for n, (_, t) in DATASETS.items()), key=lambda nt: nt[1])
    for (split, name, task), records in queries.items():
        assert records, f"no {split} queries for {name}"
        dataset_id, task_id = DATASETS[name]
        for q in records:
            assert q.dataset_id == str(dataset_id) and q.task_id == task_id == task
            assert q.query_modality == mbeir.TASKS[task][0]
            assert q.pos_cand_list


def test_fixture_is_small(built):
    caption_pool = list(built.local_pool("emojicaption", 3))
    assert len(caption_pool) <= 100  # one candidate per base emoji


def test_qrels_resolve_to_pool_entries(built, queries, pool):
    for name, (dataset_id, task) in DATASETS.items():
        local = built.cand_pool_dict(name, task)
        assert all(did.startswith(f"{dataset_id}:") for did in local)
        assert set(local) <= set(pool)
        for split in mbeir.SPLITS:
            qrels = built.qrels(split, name, task)
            records = queries[(split, name, task)]
            assert set(qrels) == {q.qid for q in records}
            assert set(qrels.task_ids.values()) == {task}
            for q in records:
                assert qrels[q.qid] == set(q.pos_cand_list)
                assert all(did in pool for did in q.pos_cand_list + q.neg_cand_list)
                assert any(did in local for did in q.pos_cand_list)  # evaluable on the local pool
                own = {(local[d].modality, local[d].txt, local[d].img_path) for d in q.pos_cand_list if d in local}
                for did in q.pos_cand_list:  # a positive from another task is an identical twin
                    assert (pool[did].modality, pool[did].txt, pool[did].img_path) in own


def test_candidate_modalities_match_tasks(built):
    for name, (_, task) in DATASETS.items():
        assert {c.modality for c in built.local_pool(name, task)} == {mbeir.TASKS[task][1]}


def test_every_image_exists_and_opens(built, queries, pool):
    paths = {q.query_img_path for records in queries.values() for q in records if q.query_img_path}
    paths |= {c.img_path for c in pool.values() if c.img_path}
    assert paths and all(p.startswith("images/") for p in paths)
    for path in sorted(paths):
        image = built.load_image(path)
        assert image.mode == "RGB" and image.size == (64, 64)
    on_disk = {p.relative_to(built.root).as_posix() for p in (built.root / "images").rglob("*.png")}
    assert on_disk == paths  # the benchmark is self-contained, nothing extra copied


def test_splits_are_disjoint_by_concept(queries):
    seen: dict[str, set[str]] = {split: set() for split in mbeir.SPLITS}
    for (split, _, _), records in queries.items():
        for q in records:
            assert concept_of(q), q
            seen[split].add(concept_of(q))
    assert not seen["train"] & seen["val"]
    assert not seen["train"] & seen["test"]
    assert not seen["val"] & seen["test"]


def test_union_train_holds_exactly_the_train_queries(built, queries):
    union = list(built.queries("union_train"))
    train = [q for (split, _, _), records in queries.items() if split == "train" for q in records]
    assert sorted(q.qid for q in union) == sorted(q.qid for q in train)


def test_stage1_pairs_exclude_held_out_concepts(built, queries, pool):
    held_out_synsets = {json.loads(q.query_src_content).get("synset")
                        for (split, _, _), records in queries.items() if split != "train" for q in records}
    held_out_synsets.discard(None)
    passages = {json.loads(c.src_content).get("synset"): c.txt for c in built.local_pool("wordnetpassage", 1)}
    definitions, lemma_sets = set(), set()
    for synset in held_out_synsets:
        lemmas, _, definition = passages[synset].partition(": ")
        definitions.add((definition[0].upper() + definition[1:]).strip())
        lemma_sets.add(lemmas)
    assert definitions
    pairs = list(read_nli_csv(built.root / TEXTPAIRS_RELPATH))
    assert len(pairs) >= 1000
    for sent0, sent1, hard_neg in pairs:
        assert sent1 not in definitions and hard_neg not in definitions
        assert sent0 not in lemma_sets and hard_neg
    train_concepts = {concept_of(q) for (s, _, _), records in queries.items() if s == "train" for q in records}
    assert train_concepts  # the pairs may use train concepts, never held-out ones


def test_no_query_contains_its_positive_text(queries, pool):
    checked = 0
    for records in queries.values():
        for q in records:
            for did in q.pos_cand_list:
                if q.query_txt and pool[did].txt:
                    assert not contains_text(q.query_txt, pool[did].txt), (q.qid, did)
                    checked += 1
    assert checked > 50


def test_text_to_text_queries_mask_the_concept(queries, pool):
    for split in mbeir.SPLITS:
        for q in queries[(split, "wordnetpassage", 1)]:
            lemmas = pool[q.pos_cand_list[0]].txt.split(": ", 1)[0].split(", ")
            for lemma in lemmas:
                assert not re.search(rf"(?<!\w){re.escape(lemma)}(?!\w)", q.query_txt, re.IGNORECASE), (q.query_txt, lemma)
            passage = pool[q.pos_cand_list[0]].txt
            assert q.query_txt.replace(MASK, "") not in passage  # the passage leaves the example out


def test_image_pairs_come_from_different_vendors(queries, pool):
    for split in mbeir.SPLITS:
        for name, task in (("emojivendor", 4), ("emojivariant", 7), ("emojiqa", 8)):
            for q in queries[(split, name, task)]:
                assert q.query_img_path.startswith("images/google/")
                for did in q.pos_cand_list:
                    assert pool[did].img_path.startswith("images/twitter/")


def test_composed_queries_have_the_other_variants_in_the_pool(built, queries):
    local = built.cand_pool_dict("emojivariant", 7)
    concepts = {}
    for c in local.values():
        concepts.setdefault(json.loads(c.src_content)["concept"], set()).add(c.did)
    for split in mbeir.SPLITS:
        for q in queries[(split, "emojivariant", 7)]:
            family = concepts[concept_of(q)]
            assert len(family - set(q.pos_cand_list)) >= 1
            assert q.neg_cand_list and set(q.neg_cand_list) <= family
            target = next(local[d] for d in q.pos_cand_list if d in local)
            assert q.query_img_path.rsplit("/", 1)[1] != target.img_path.rsplit("/", 1)[1]


def test_instructions_cover_every_task_used(built, queries, pool):
    used = {(q.dataset_id, q.query_modality, pool[q.pos_cand_list[0]].modality)
            for records in queries.values() for q in records}
    assert len(used) == 8
    for key in used:
        assert len(built.instructions[key]) >= 4
        assert built.instruction_for(key[0], key[1], key[2]).endswith(".")


def test_same_seed_same_bytes(built, tmp_path):
    again = build_pocketbeir(tmp_path / "again", SOURCES, seed=0, fixture=True, show_progress=False)
    assert dataset_checksum(again) == dataset_checksum(built.root)
    card_lines = lambda root: [l for l in (root / "README.md").read_text().splitlines() if "Build time" not in l]  # noqa: E731
    assert card_lines(again) == card_lines(built.root)
    (again / "images" / "google" / "stale.png").write_bytes(b"x")  # a rebuild in place removes leftovers
    build_pocketbeir(again, SOURCES, seed=0, fixture=True, show_progress=False)
    assert dataset_checksum(again) == dataset_checksum(built.root)


def test_card_states_the_counts(built):
    card = (built.root / "README.md").read_text()
    for name in mbeir.POCKETBEIR_DATASETS:
        assert f"| {name} |" in card
    assert "Build time" in card and "Precision on" in card and "CC-BY 4.0" in card


def test_mask_terms():
    assert mask_terms("Domestic cats; a Cat's toy; wildcats", ["cat"]) == f"Domestic {MASK}; a {MASK} toy; wildcats"
    assert mask_terms("an ice-cream cone", ["ice cream"]) == f"an {MASK} cone"
