"""Retrieval metrics with M-BEIR's conventions, and the zero-shot metrics of the LamRA paper.

Names matter here, because the field uses "recall" for two different numbers:

- ``R@K`` (``hit_at_k``) is M-BEIR's "Recall@K": 1 if *any* positive is in the top K, else 0, averaged
  over queries. trec_eval calls it ``success.K``.
- ``recall_at_k`` is trec_eval's ``recall.K``: the fraction of a query's positives in the top K. The two
  differ only for queries with several positives; M-BEIR tables never use it.
- ``MAP@K`` (``average_precision_at_k``) is CIRCO's: precision at each hit in the top K, summed and
  divided by ``min(K, number of positives)``.
- ITM accuracy (``itm_accuracy``): the matching candidate must score strictly above every mismatched one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

# --- M-BEIR conventions ----------------------------------------------------------------------------

# Fashion retrieval is hard (near-duplicate garments), so M-BEIR reports R@10/20/50 for these and
# R@1/5/10 for the rest; the headline is R@10 for them and R@5 otherwise (UniIR's retrieval configs).
FASHION_DATASETS = frozenset({"fashion200k", "fashioniq"})
DEFAULT_RECALL_KS = (1, 5, 10)
FASHION_RECALL_KS = (10, 20, 50)


def _dataset_key(dataset_name: str) -> str:
    return dataset_name.lower().replace("-", "").replace("_", "")


def is_fashion_dataset(dataset_name: str) -> bool:
    return _dataset_key(dataset_name) in FASHION_DATASETS


def recall_ks_for(dataset_name: str) -> tuple[int, ...]:
    """The R@K cut-offs M-BEIR reports for a dataset."""
    return FASHION_RECALL_KS if is_fashion_dataset(dataset_name) else DEFAULT_RECALL_KS


def headline_metric_for(dataset_name: str) -> str:
    """The one number per dataset in the paper's Tables 5/6: R@10 for fashion datasets, else R@5."""
    return "R@10" if is_fashion_dataset(dataset_name) else "R@5"


# --- per-query metrics -----------------------------------------------------------------------------


def hit_at_k(ranked: Sequence[str], positives: Collection[str], k: int) -> float:
    """M-BEIR's Recall@K: 1.0 if any positive is among the first k ranked ids."""
    return 1.0 if any(did in positives for did in ranked[:k]) else 0.0


def recall_at_k(ranked: Sequence[str], positives: Collection[str], k: int) -> float:
    """trec_eval's recall.K: the fraction of the positives among the first k ranked ids."""
    if not positives:
        return 0.0
    return len(set(ranked[:k]) & set(positives)) / len(set(positives))


def average_precision_at_k(ranked: Sequence[str], positives: Collection[str], k: int) -> float:
    """CIRCO's AP@K: sum of precision@i at every hit i <= k, divided by min(k, #positives)."""
    if not positives:
        return 0.0
    hits, total = 0, 0.0
    for rank, did in enumerate(ranked[:k], start=1):
        if did in positives:
            hits += 1
            total += hits / rank
    return total / min(k, len(set(positives)))


def itm_accuracy(positive_scores: Sequence[float], negative_scores: Sequence[float] | np.ndarray) -> float:
    """Image-text matching accuracy: the share of items whose matching candidate scores strictly
    above all its mismatched ones (a tie counts as wrong, so a constant scorer gets 0).

    ``positive_scores``: (n,); ``negative_scores``: (n,) one negative each, or (n, m) several.
    """
    positive = np.asarray(positive_scores, dtype=np.float64)
    negative = np.asarray(negative_scores, dtype=np.float64)
    if negative.ndim == 1:
        negative = negative[:, None]
    if positive.ndim != 1 or negative.ndim != 2 or len(negative) != len(positive):
        raise ValueError(f"itm_accuracy: {positive.shape} positive scores vs {negative.shape} negative scores")
    if len(positive) == 0:
        raise ValueError("itm_accuracy: no items")
    return float(np.mean(positive > negative.max(axis=1)))


# --- a run against qrels ---------------------------------------------------------------------------


def evaluate_run(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Collection[str]],
    recall_ks: Iterable[int] = DEFAULT_RECALL_KS,
    map_ks: Iterable[int] = (5,),
) -> dict[str, float]:
    """Mean metrics of a run (qid -> ranked dids) over every query in ``qrels``.

    A query in qrels that the run lacks scores 0 (it was not answered); a run query without qrels is
    an error, since its result could not be counted. Returns ``{"R@1": .., "MAP@5": .., "queries": n}``.
    """
    unjudged = [qid for qid in run if qid not in qrels]
    if unjudged:
        raise ValueError(f"{len(unjudged)} run queries have no qrels, e.g. {unjudged[0]!r}")
    per_query = per_query_metrics(run, qrels, recall_ks, map_ks)
    if not per_query:
        raise ValueError("evaluate_run: qrels hold no queries")
    names = next(iter(per_query.values())).keys()
    means = {name: float(np.mean([values[name] for values in per_query.values()])) for name in names}
    means["queries"] = len(per_query)
    return means


def per_query_metrics(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Collection[str]],
    recall_ks: Iterable[int] = DEFAULT_RECALL_KS,
    map_ks: Iterable[int] = (5,),
) -> dict[str, dict[str, float]]:
    recall_ks, map_ks = tuple(recall_ks), tuple(map_ks)
    result = {}
    for qid, positives in qrels.items():
        positives = set(positives)
        ranked = list(run.get(qid, ()))
        values = {f"R@{k}": hit_at_k(ranked, positives, k) for k in recall_ks}
        values.update({f"MAP@{k}": average_precision_at_k(ranked, positives, k) for k in map_ks})
        result[qid] = values
    return result


# --- aggregation -----------------------------------------------------------------------------------


def headline_average(task_metrics: Mapping[str, Mapping[str, float]], dataset_of: Mapping[str, str]) -> float:
    """The "Avg" column: the mean over task columns of each one's headline metric (R@5 / R@10)."""
    if not task_metrics:
        raise ValueError("headline_average: no tasks")
    values = [metrics[headline_metric_for(dataset_of[key])] for key, metrics in task_metrics.items()]
    return float(np.mean(values))


def mean_by_group(
    task_metrics: Mapping[str, Mapping[str, float]], group_of: Mapping[str, object]
) -> dict[object, dict[str, float]]:
    """Average the metrics of task columns that share a group (a task id, a dataset, a domain).

    Only metric names that every member of the group has are averaged (fashion columns have no R@1).
    """
    groups: dict[object, list[Mapping[str, float]]] = defaultdict(list)
    for key, metrics in task_metrics.items():
        groups[group_of[key]].append(metrics)
    averaged = {}
    for group, members in groups.items():
        shared = set.intersection(*(set(m) for m in members)) - {"queries"}
        averaged[group] = {name: float(np.mean([m[name] for m in members])) for name in sorted(shared)}
    return averaged
