"""A smaller M-BEIR-format benchmark cut from a bigger one, for evaluations a CPU can afford.

For each task of a split: a seeded sample of at most ``queries_per_task`` queries, and a local pool
of whole *concepts*: every candidate of the concepts of the sampled queries' positives, plus every
candidate of a seeded sample of ``distractor_concepts`` other concepts. Keeping concepts whole keeps
the hard distractors (for composed queries, the other skin tones and genders of the same emoji stay in
the pool). A candidate's concept is ``src_content["concept"]`` where present (PocketBEIR); elsewhere
each candidate is its own concept, i.e. plain random distractors.

The output is the same layout (queries, local and global pools, qrels, instructions) with the used
images copied, so every reader and evaluator runs on it unchanged.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import defaultdict
from pathlib import Path

from lamra.data.mbeir import (
    INSTRUCTIONS_RELPATH,
    MBEIRCandidate,
    MBEIRDataset,
    global_pool_relpath,
    local_pool_relpath,
    qrels_relpath,
    query_relpath,
    src_field,
    write_jsonl,
    write_qrels,
)


def concept_of(candidate: MBEIRCandidate) -> str:
    return str(src_field(candidate.src_content, "concept") or candidate.did)


def subset_mbeir(
    source: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "test",
    queries_per_task: int = 100,
    distractor_concepts: int = 200,
    seed: int = 0,
) -> Path:
    data, out = MBEIRDataset(source), Path(out)
    if out.exists():
        shutil.rmtree(out)
    rng = random.Random(seed)
    images: set[str] = set()
    global_pool: dict[str, MBEIRCandidate] = {}
    for name, task in data.tasks(split):
        queries = list(data.queries(split, name, task))
        queries = sorted(rng.sample(queries, min(queries_per_task, len(queries))), key=lambda q: q.qid)
        pool = list(data.local_pool(name, task, split))
        by_concept: dict[str, list[MBEIRCandidate]] = defaultdict(list)
        concept_by_did = {}
        for candidate in pool:
            concept = concept_of(candidate)
            by_concept[concept].append(candidate)
            concept_by_did[candidate.did] = concept
        wanted = {concept_by_did[did] for q in queries for did in q.pos_cand_list if did in concept_by_did}
        others = sorted(set(by_concept) - wanted)
        wanted |= set(rng.sample(others, min(distractor_concepts, len(others))))
        kept = [c for c in pool if concept_by_did[c.did] in wanted]
        write_jsonl(out / query_relpath(name, task, split), queries)
        write_jsonl(out / local_pool_relpath(name, task), kept)
        qrels = data.qrels(split, name, task)
        write_qrels(out / qrels_relpath(name, task, split), {q.qid: qrels.get(q.qid, set()) for q in queries}, task)
        for candidate in kept:
            global_pool[candidate.did] = candidate
            if candidate.img_path:
                images.add(candidate.img_path)
        images |= {q.query_img_path for q in queries if q.query_img_path}
    write_jsonl(out / global_pool_relpath(split), sorted(global_pool.values(), key=_did_order))
    (out / INSTRUCTIONS_RELPATH).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(data.path(INSTRUCTIONS_RELPATH), out / INSTRUCTIONS_RELPATH)
    for relpath in sorted(images):
        target = out / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data.resolve_image(relpath), target)
    return out


def _did_order(candidate: MBEIRCandidate) -> tuple[int, int]:
    dataset, number = candidate.did.split(":", 1)
    return int(dataset), int(number)
