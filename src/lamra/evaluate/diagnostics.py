"""Is the model telling items apart? Embedding spread per modality, with and without an instruction;
and does the reranker tell a query's positive from the retriever's near misses?

A retriever that maps different images to nearly the same vector (mean pairwise cosine near 1) cannot
retrieve by image content, whatever its loss says: the first shipped compact model had cosines of
0.92-0.998 between different emoji images. ``embedding_spread`` measures it on a seeded sample of a
candidate pool; ``lamra diagnose`` prints the table, and the training report carries it per stage.

    lamra diagnose $LAMRA_HOME/pocketbeir --model runs/compact-stage2/final

A reranker's loss says little on its own: its answers are mostly format tokens, and a model that has
learned only the format and the share of "Yes" sits at a loss that looks trained. ``rerank_separation``
asks the question reranking needs answered: within each query's retrieved top k, how often does a
positive score above a non-positive (pairwise AUC; 0.5 is a coin flip), for the reranker and for
retrieval's own cosine. ``lamra diagnose --rerank`` prints it per task.

A retriever can fit its training queries and still fail on new ones: PocketBEIR's splits share no
concept, so a model that memorises its training concepts scores high on them and low on test.
``generalization_gap`` puts the two side by side: the headline recall of a seeded sample of training
queries and of the evaluated split's queries, each against the task's local pool
(``lamra diagnose --generalization``). Only queries with a positive in that pool are counted (on
M-BEIR a split's local pool may not hold the training items).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lamra.data.mbeir import (
    UNION_TRAIN_RELPATH,
    MBEIRDataset,
    MBEIRQuery,
    normalize_modality,
    read_instructions,
    read_jsonl,
)
from lamra.data.mbeir_items import candidate_item, query_item
from lamra.evaluate.metrics import headline_metric_for, hit_at_k
from lamra.evaluate.queries import encode_queries, pick_instruction, positive_modality, sample_queries
from lamra.evaluate.report import EvaluationReport
from lamra.evaluate.task_pools import TaskPools
from lamra.evaluate.tasks import EvalTask, list_tasks
from lamra.items import InputError

MODALITIES = ("image", "text", "image,text")


@dataclass
class Spread:
    modality: str
    instruction: str | None
    items: int
    mean_cosine: float  # over pairs of different items
    max_cosine: float

    def row(self) -> str:
        shown = "none" if self.instruction is None else f'"{self.instruction}"'
        return f"| {self.modality} | {shown} | {self.items} | {self.mean_cosine:.3f} | {self.max_cosine:.3f} |"


def pairwise_cosine_stats(vectors: np.ndarray) -> tuple[float, float]:
    """Mean and max cosine over pairs of different rows (rows L2-normalised here)."""
    if len(vectors) < 2:
        raise ValueError(f"need at least 2 vectors to compare, got {len(vectors)}")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    cosines = unit @ unit.T
    off_diagonal = cosines[~np.eye(len(unit), dtype=bool)]
    return float(off_diagonal.mean()), float(off_diagonal.max())


def sample_candidates(data_root: Path, split: str, per_modality: int, seed: int = 0) -> dict[str, list[dict]]:
    """A seeded sample of ``per_modality`` candidates of each modality from the split's global pool."""
    pools = sorted((MBEIRDataset(data_root).root / "cand_pool" / "global").glob(f"*_{split}_cand_pool.jsonl"))
    if not pools:
        raise InputError(f"no global candidate pool for split {split!r} under {str(data_root)!r}")
    by_modality: dict[str, list[dict]] = {m: [] for m in MODALITIES}
    for candidate in read_jsonl(pools[0], "candidate"):
        modality = normalize_modality(candidate.modality)
        if modality in by_modality:
            by_modality[modality].append(candidate_item(candidate))
    rng = random.Random(seed)
    return {m: rng.sample(items, min(per_modality, len(items))) for m, items in by_modality.items() if len(items) > 1}


def instruction_for_modality(data_root: Path, modality: str) -> str | None:
    """The first instruction whose query modality is ``modality`` (the item plays a query)."""
    path = data_root / "instructions" / "query_instructions.tsv"
    if not path.is_file():
        return None
    for (_, query_modality, _), prompts in read_instructions(path).items():
        if query_modality == modality and prompts:
            return prompts[0]
    return None


def embedding_spread(encoder: Any, data_root: str | Path, split: str = "val", per_modality: int = 48,
                     seed: int = 0) -> list[Spread]:
    """Mean / max pairwise cosine of different items, per modality, without and with an instruction."""
    data_root = Path(data_root)
    rows = []
    for modality, items in sample_candidates(data_root, split, per_modality, seed).items():
        instruction = instruction_for_modality(data_root, modality)
        for instruction in [None] + ([instruction] if instruction else []):
            role = "document" if instruction is None else "query"  # a candidate, or a query asking for one
            vectors = encoder.encode(items, instruction=instruction, image_root=data_root, role=role)
            mean, largest = pairwise_cosine_stats(np.asarray(vectors, dtype=np.float32))
            rows.append(Spread(modality, instruction, len(items), mean, largest))
    return rows


def spread_table(rows: list[Spread]) -> str:
    return "\n".join([
        "| items | instruction | n | mean cosine (different items) | max cosine |",
        "|---|---|---:|---:|---:|",
        *(row.row() for row in rows),
    ])


@dataclass
class Separation:
    task: str
    queries: int  # those whose top k holds a positive and a non-positive (the others cannot be ordered)
    sampled: int
    retrieval_auc: float
    rerank_auc: float

    def row(self) -> str:
        return (f"| {self.task} | {self.queries} of {self.sampled} | {self.retrieval_auc:.3f} | "
                f"{self.rerank_auc:.3f} |")


def pairwise_auc(scores: np.ndarray, relevant: np.ndarray) -> float:
    """The share of (positive, non-positive) pairs that ``scores`` order right; ties count half."""
    scores, relevant = np.asarray(scores, np.float64), np.asarray(relevant, bool)
    positives, negatives = scores[relevant], scores[~relevant]
    if not len(positives) or not len(negatives):
        raise ValueError("pairwise AUC needs at least one positive and one non-positive")
    above = positives[:, None] - negatives[None, :]
    return float(((above > 0) + 0.5 * (above == 0)).mean())


def rerank_separation(report: EvaluationReport, reranker: str, pool: str = "local") -> list[Separation]:
    """Per task: mean pairwise AUC, over the reranker's top k, of its scores and of retrieval's."""
    data = MBEIRDataset(report.data_root)
    rows = []
    for result in report.results:
        if result.method != reranker or result.pool != pool or result.skipped:
            continue
        if result.seconds.get("rerank_skipped"):  # weight 0: its scores are placeholder zeros
            raise ValueError(f"reranker {reranker!r} was not run on {result.task.key} (fusion weight 0)")
        judged = data.qrels(report.split, result.task.dataset, result.task.task_id)
        retrieval, rerank = [], []
        for qid, entry in result.retrieved.items():
            scores = entry.rerank_scores[reranker]
            relevant = np.array([did in judged.get(qid, ()) for did in entry.dids[: len(scores)]])
            if relevant.any() and not relevant.all():
                retrieval.append(pairwise_auc(entry.scores[: len(scores)], relevant))
                rerank.append(pairwise_auc(scores, relevant))
        rows.append(Separation(result.task.key, len(rerank), len(result.retrieved),
                               float(np.mean(retrieval)) if retrieval else float("nan"),
                               float(np.mean(rerank)) if rerank else float("nan")))
    if not rows:
        raise ValueError(f"the report has no results of reranker {reranker!r} on the {pool} pool")
    return rows


def separation_table(rows: list[Separation], top_k: int) -> str:
    counted = [row for row in rows if row.queries]
    mean = lambda values: float(np.mean(values)) if values else float("nan")  # noqa: E731
    return "\n".join([
        f"Pairwise AUC within each query's top {top_k}: positive above non-positive (0.5: a coin flip)",
        "",
        "| task | queries | retrieval AUC | rerank AUC |",
        "|---|---:|---:|---:|",
        *(row.row() for row in rows),
        f"| mean | {sum(r.queries for r in rows)} of {sum(r.sampled for r in rows)} | "
        f"{mean([r.retrieval_auc for r in counted]):.3f} | {mean([r.rerank_auc for r in counted]):.3f} |",
    ])


@dataclass
class Generalization:
    task: str
    metric: str  # the task's headline recall, e.g. "R@5"
    seen_queries: int  # training queries with a positive in the pool, sampled
    seen_recall: float
    new_queries: int
    new_recall: float

    def row(self) -> str:
        def cell(count: int, recall: float) -> str:
            return f"{100 * recall:.1f} ({count})" if count else "- (0)"

        gap = f"{100 * (self.seen_recall - self.new_recall):+.1f}" if self.seen_queries and self.new_queries else "-"
        return (f"| {self.task} | {self.metric} | {cell(self.seen_queries, self.seen_recall)} | "
                f"{cell(self.new_queries, self.new_recall)} | {gap} |")


def _task_queries(data: MBEIRDataset, split: str, task: EvalTask,
                  union_train: Callable[[], list[MBEIRQuery]]) -> list[MBEIRQuery]:
    """The task's queries of ``split``: its own file, else (M-BEIR's training data) the union file's
    queries of the task id (the caller keeps those whose positive is in the task's pool).
    ``union_train`` returns the union file's queries, read once per run: M-BEIR's holds 1.1M."""
    if (task.dataset, task.task_id) in set(data.tasks(split)):
        return list(data.queries(split, task.dataset, task.task_id))
    if split == "train" and data.path(UNION_TRAIN_RELPATH).is_file():
        return [q for q in union_train() if q.task_id == task.task_id]
    return []


def generalization_gap(encoder: Any, data_root: str | Path, split: str = "val", *, seen_split: str = "train",
                       queries_per_task: int = 100, tasks: Any = None, seed: int = 0,
                       batch_size: int = 32, show_progress: bool = True) -> list[Generalization]:
    """Per task of ``split``: headline recall (hit rate) on a seeded sample of ``seen_split`` queries
    and of ``split`` queries, both against the task's local pool, with the instruction drawn as the
    evaluation draws it. A large gap means the model learned its training items, not the task."""
    data = MBEIRDataset(data_root)
    pools = TaskPools(encoder, data, model_name=getattr(encoder, "name", None) or type(encoder).__name__,
                      batch_size=batch_size, index_dir=None, index_type="flat", show_progress=show_progress)
    rows = []
    union_train = functools.cache(lambda: list(data.queries("union_train")))
    for task in list_tasks(data, split, tasks):
        metric = headline_metric_for(task.dataset)
        depth = int(metric.split("@")[1])
        pool_path = pools.pool_path("local", task, split)
        candidates = pools.candidates(pool_path)
        measured = []
        for which in (seen_split, split):
            judged = [q for q in _task_queries(data, which, task, union_train) if any(did in candidates for did in q.pos_cand_list)]
            queries = sample_queries(judged, queries_per_task, f"{seed}:{which}:{task.key}")
            if not queries:
                measured.append((0, float("nan")))
                continue
            instructions = [pick_instruction(data, q, positive_modality(q, candidates, task), seed=seed)
                            for q in queries]
            items = [query_item(q, instruction) for q, instruction in zip(queries, instructions)]
            vectors = encode_queries(encoder, items, instructions, batch_size=batch_size, image_root=data.root,
                                     show_progress=show_progress)
            index, _ = pools.index(pool_path)
            _, ids = index.search(vectors, depth)
            hits = [hit_at_k(list(ranked), set(q.pos_cand_list), depth) for q, ranked in zip(queries, ids)]
            measured.append((len(queries), float(np.mean(hits))))
        (seen_count, seen_recall), (new_count, new_recall) = measured
        rows.append(Generalization(task.key, metric, seen_count, seen_recall, new_count, new_recall))
    return rows


def generalization_table(rows: list[Generalization], split: str, seen_split: str = "train") -> str:
    return "\n".join([
        f"Recall on {seen_split} queries (seen in training) and on {split} queries, local pool "
        "(queries counted in brackets)",
        "",
        f"| task | metric | {seen_split} | {split} | gap |",
        "|---|---|---:|---:|---:|",
        *(row.row() for row in rows),
    ])
