"""Reranking inside an evaluation: a ``RerankMethod`` scores each query's top-k, the scores are fused
``final = retrieval + w * rerank``, and w is chosen per task on val (``sweep_rerank_weights``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from lamra.data.mbeir import MBEIRCandidate, MBEIRDataset, MBEIRQuery
from lamra.data.mbeir_items import candidate_item, rerank_query_item
from lamra.evaluate.metrics import headline_metric_for
from lamra.evaluate.tasks import score_run
from lamra.evaluate.trec import trec_order

if TYPE_CHECKING:
    from lamra.evaluate.report import EvaluationReport


DEFAULT_WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


# rerank(query item, candidate items, their retrieval scores) -> one rerank score per candidate
RerankFn = Callable[[dict, list[dict], np.ndarray], Sequence[float]]


@dataclass(frozen=True)
class RerankMethod:
    """A reranker and how it is fused; ``name`` is its row in the tables."""

    name: str
    rerank: RerankFn
    top_k: int = 10
    weights: Mapping[str, float] = field(default_factory=dict)  # task key -> w
    default_weight: float = 1.0

    def weight_for(self, task_key: str) -> float:
        return float(self.weights.get(task_key, self.default_weight))


@dataclass
class Retrieved:
    """One query's retrieved candidates, best first, with the rerank scores of each reranker's top-k."""

    dids: list[str]
    scores: np.ndarray
    rerank_scores: dict[str, np.ndarray] = field(default_factory=dict)


def reranked_run(retrieved: Retrieved, method: str, weight: float) -> list[tuple[str, float]]:
    """The reranked list: the top-k by ``retrieval + weight * rerank``, then the rest in retrieval order.

    The rest keep their retrieval scores shifted down below the reranked block, so that the list's
    scores decrease with rank and a TREC file of it ranks exactly as we do.
    """
    rerank = retrieved.rerank_scores[method]
    k = len(rerank)
    top = trec_order(retrieved.dids[:k], retrieved.scores[:k].astype(np.float64) + weight * rerank)
    rest = trec_order(retrieved.dids[k:], retrieved.scores[k:].astype(np.float64))
    if top and rest and rest[0][1] >= top[-1][1]:
        shift = rest[0][1] - top[-1][1] + 1.0
        rest = [(did, score - shift) for did, score in rest]
    return top + rest


def retrieval_run(retrieved: Mapping[str, Retrieved]) -> dict[str, list[tuple[str, float]]]:
    return {qid: trec_order(r.dids, r.scores) for qid, r in retrieved.items()}


def rerank_top_k(reranker: RerankMethod, queries: list[MBEIRQuery], instructions: list[str],
                retrieved: dict[str, Retrieved], candidates: Mapping[str, MBEIRCandidate],
                show_progress: bool) -> float:
    """Store each query's rerank scores of its top-k in ``retrieved``; returns the seconds spent."""
    total = 0.0
    for query, instruction in tqdm(list(zip(queries, instructions)), desc=f"reranking ({reranker.name})",
                                   unit="query", disable=not show_progress):
        entry = retrieved[query.qid]
        top = entry.dids[: reranker.top_k]
        start = time.perf_counter()
        scores = reranker.rerank(rerank_query_item(query, instruction), [candidate_item(candidates[d]) for d in top],
                                 entry.scores[: len(top)].copy())
        total += time.perf_counter() - start
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(top) or not np.all(np.isfinite(scores)):
            raise ValueError(f"reranker {reranker.name!r} returned {scores.tolist()} for query {query.qid!r} "
                             f"({len(top)} finite scores expected)")
        entry.rerank_scores[reranker.name] = scores
    return total


def model_reranker(model: Any, image_root: str | Path, *, mode: str = "pointwise", window: int = 5) -> RerankFn:
    """A ``RerankFn`` from a model with LamRA's ``rerank(query, candidates, mode=, window=, ids=,
    image_root=) -> hits`` (each hit with ``id`` and ``rerank_score``): scores in candidate order."""

    def rerank(query: dict, candidates: list[dict], retrieval_scores: np.ndarray) -> np.ndarray:
        hits = model.rerank(query, candidates, mode=mode, window=window, ids=list(range(len(candidates))),
                            image_root=image_root)
        scores = np.full(len(candidates), np.nan)
        for hit in hits:
            scores[hit.id] = hit.rerank_score
        return scores

    return rerank


@dataclass
class WeightSweep:
    best: dict[str, float]  # task key -> chosen w
    table: dict[str, dict[float, float]]  # task key -> {w: headline metric on val}


def sweep_rerank_weights(report: EvaluationReport, reranker: str, *, pool: str = "local",
                         grid: Sequence[float] = DEFAULT_WEIGHT_GRID, metric: str | None = None) -> WeightSweep:
    """For each task, the w of ``grid`` with the best ``metric`` (default: the headline metric, R@5;
    R@10 fashion) on the report's split; ties go to the smallest w, so a reranker gets a weight only
    where it beat retrieval alone on val (a val split of 88-338 queries a task cannot tell a tie
    from noise; ties once went to w = 1, which the test split then did not confirm). Refuses a
    test-split report. Listwise over the top 5 cannot move R@5: choose its w on R@1."""
    if report.split == "test":
        raise ValueError("fusion weights are chosen on val, never on test: evaluate split='val' first")
    best, table = {}, {}
    for result in report.results:
        if result.method != reranker or result.pool != pool or result.skipped:
            continue
        judged = MBEIRDataset(report.data_root).qrels(report.split, result.task.dataset, result.task.task_id)
        qrels = {qid: judged[qid] for qid in result.retrieved}  # the report's queries (all, or its sample)
        headline = metric or headline_metric_for(result.task.dataset)
        table[result.task.key] = {
            w: score_run({qid: reranked_run(r, reranker, w) for qid, r in result.retrieved.items()}, qrels, result.task)[headline]
            for w in grid
        }
        top = max(table[result.task.key].values())
        tied = [w for w, value in table[result.task.key].items() if math.isclose(value, top, abs_tol=1e-12)]
        best[result.task.key] = min(tied)
    if not table:
        raise ValueError(f"the report has no results of reranker {reranker!r} on the {pool} pool")
    return WeightSweep(best, table)
