"""M-BEIR evaluation: retrieve for every task of a split, optionally rerank, score, write it all down.

The one entry point is ``evaluate_mbeir(encoder, data_root, ...)``. For each task file of the split
(``query/{split}/mbeir_{dataset}_task{N}_{split}.jsonl``) and each pool ("local": that task's own pool,
"global": the split's union pool) it

1. picks each query's instruction (``pick_instruction``): keyed by (dataset id of the qid, query
   modality, modality of the first positive of the query's own dataset), as UniIR's eval does; the
   paraphrase is drawn at random as in both official evals (LamRA's, unseeded; UniIR's, seeded), but
   from a generator seeded by ``(seed, qid)``, so the choice is reproducible and independent of order;
2. encodes the queries with ``encoder.encode(items, instruction=...)`` and the pool into a
   ``VectorIndex`` (cached on disk under ``index_dir`` when given, resumable);
3. searches the top ``run_depth`` candidates (with ``query_expansion``, a second time from each
   query moved toward its first hits: ``lamra.query_expansion``) and scores them: R@K as M-BEIR's hit rate (R@1/5/10, or
   R@10/20/50 for fashion datasets), MAP@5;
4. for every ``RerankMethod``: scores the top ``top_k`` with ``rerank(query, candidates, retrieval
   scores)`` and fuses ``final = retrieval + w * rerank`` (w per task, chosen on val with
   ``choose_rerank_weights``, never on test).

M-BEIR text is normalised here as UniIR/LamRA do (``format_mbeir_text``), so an encoder receives item
dicts ``{"txt", "img_path", "modality", "qid"|"did"}`` with ``img_path`` relative to ``image_root``.
An encoder that declares ``supported_modalities`` (e.g. ``{"text"}``) is not asked for tasks or pools
it cannot encode: those cells are recorded as skipped and shown as "-".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lamra.data.mbeir import MBEIRDataset, MBEIRQuery
from lamra.data.mbeir_items import query_item
from lamra.evaluate.environment import evaluation_environment
from lamra.evaluate.fusion import (
    DEFAULT_WEIGHT_GRID,
    RerankMethod,
    Retrieved,
    WeightSweep,
    rerank_top_k,
    reranked_run,
    retrieval_run,
    sweep_rerank_weights,
)
from lamra.evaluate.metrics import recall_ks_for
from lamra.evaluate.queries import (
    Encoder,
    ModalityNotSupported,
    encode_queries,
    model_label,
    modalities_of,
    pick_instruction,
    positive_modality,
    sample_queries,
    unsupported_modalities,
)
from lamra.evaluate.report import EvaluationReport, TaskResult, load_results, safe_name, write_report
from lamra.evaluate.task_pools import TaskPools
from lamra.evaluate.tasks import EvalTask, list_tasks, score_run
from lamra.query_expansion import QueryExpansion, expanded_search

POOLS = ("local", "global")


def evaluate_mbeir(
    encoder: Encoder,
    data_root: str | Path,
    *,
    method: str = "model",
    model_name: str | None = None,
    split: str = "test",
    pools: Sequence[str] = ("local",),
    tasks: Iterable[str] | None = None,
    rerankers: Sequence[RerankMethod] = (),
    instruction_choice: str = "random",
    instructions_path: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 32,
    run_depth: int = 50,
    index_dir: str | Path | None = None,
    index_type: str = "flat",
    queries_per_task: int | None = None,
    show_progress: bool = True,
    query_expansion: QueryExpansion | None = None,
) -> EvaluationReport:
    """Evaluate an encoder (and rerankers) on an M-BEIR-format directory; see the module docstring.

    ``method`` names the retrieval row of the tables; each reranker adds a row named by its ``name``.
    ``model_name`` keys the index cache under ``index_dir`` (default: ``encoder.name`` or the class).
    ``queries_per_task``: a sample of that many queries per task (seeded by ``seed``; for choosing
    fusion weights on val within a budget), in file order; None evaluates every query.
    """
    data = MBEIRDataset(data_root, instructions_path)
    if index_dir is not None and not (model_name or getattr(encoder, "name", None)):
        raise ValueError("index_dir needs model_name (e.g. the checkpoint path), so that cached indexes "
                         "of different models never mix")
    model_name = model_name or getattr(encoder, "name", None) or type(encoder).__name__
    for pool in pools:
        if pool not in POOLS:
            raise ValueError(f"pool {pool!r}: expected one of {POOLS}")
    cache = TaskPools(encoder, data, model_name=model_name, batch_size=batch_size, index_dir=index_dir,
                       index_type=index_type, show_progress=show_progress)
    prepared = []
    for task in list_tasks(data, split, tasks):
        queries = sample_queries(list(data.queries(split, task.dataset, task.task_id)), queries_per_task,
                                 f"{seed}:{task.key}")
        qrels = data.qrels(split, task.dataset, task.task_id)
        if queries_per_task is not None:  # a sample is scored over its own queries only
            qrels = {q.qid: qrels[q.qid] for q in queries if q.qid in qrels}
        local = cache.candidates(cache.pool_path("local", task, split))
        instructions = [pick_instruction(data, q, positive_modality(q, local, task), choice=instruction_choice,
                                         seed=seed) for q in queries]
        prepared.append((task, queries, instructions, qrels))
    results = []
    # Pool by pool, local first: the global pool is the union of the local pools, so once they are
    # indexed (or loaded from the cache) it needs no encoding of its own.
    for pool in sorted(pools, key=lambda name: name != "local"):
        for task, queries, instructions, qrels in prepared:
            results.extend(_evaluate_task_pool(
                encoder, cache, data, task, pool, split, queries, instructions, qrels, method, rerankers,
                batch_size=batch_size, run_depth=run_depth, show_progress=show_progress,
                query_expansion=query_expansion))
    settings = {"pools": list(pools), "instruction_choice": instruction_choice,
                "instructions": str(data.instructions_path), "seed": seed,
                "run_depth": run_depth, "index": index_type,
                "queries_per_task": queries_per_task,
                "query_expansion": None if query_expansion is None else asdict(query_expansion),
                "rerankers": {r.name: {"top_k": r.top_k, "weights": dict(r.weights),
                                       "default_weight": r.default_weight} for r in rerankers}}
    return EvaluationReport(split, str(data.root), model_name, settings, results, evaluation_environment(encoder))


def _evaluate_task_pool(encoder, cache: TaskPools, data: MBEIRDataset, task: EvalTask, pool: str, split: str,
                        queries: list[MBEIRQuery], instructions: list[str], qrels, method: str,
                        rerankers: Sequence[RerankMethod], *, batch_size: int, run_depth: int,
                        show_progress: bool, query_expansion: QueryExpansion | None = None) -> list[TaskResult]:
    methods = [method] + [r.name for r in rerankers]
    path = cache.pool_path(pool, task, split)
    candidates = cache.candidates(path)
    items = [query_item(q, instruction) for q, instruction in zip(queries, instructions)]
    missing_in_queries = unsupported_modalities(encoder, modalities_of(items))
    missing_in_pool = unsupported_modalities(encoder, cache.modalities(path))
    if missing_in_queries or missing_in_pool:
        where = "queries" if missing_in_queries else f"{pool} pool"
        kinds = "/".join(sorted(missing_in_queries or missing_in_pool))
        reason = f"{model_label(encoder)} cannot encode the {kinds} items of the {where}"
        return [TaskResult(name, pool, task, skipped=reason) for name in methods]

    try:
        index, index_seconds = cache.index(path)
        if task.key not in cache.query_vectors:  # the same vectors serve the local and global pool
            start = time.perf_counter()
            vectors = encode_queries(encoder, items, instructions, batch_size=batch_size,
                                     image_root=data.root, show_progress=show_progress)
            cache.query_vectors[task.key] = (vectors, time.perf_counter() - start)
        query_vectors, encode_seconds = cache.query_vectors[task.key]
    except ModalityNotSupported as error:
        return [TaskResult(name, pool, task, skipped=str(error)) for name in methods]

    start = time.perf_counter()
    scores, ids = expanded_search(index.search, index.vectors_of, query_vectors,
                                  max(run_depth, max(recall_ks_for(task.dataset))), query_expansion)
    search_seconds = time.perf_counter() - start
    retrieved = {q.qid: Retrieved(ids[row], scores[row, : len(ids[row])]) for row, q in enumerate(queries)}

    timing = {"index_build": index_seconds, "encode_queries": encode_seconds, "search": search_seconds,
              "per_query": (encode_seconds + search_seconds) / len(queries)}
    run = retrieval_run(retrieved)
    results = [TaskResult(method, pool, task, score_run(run, qrels, task), seconds=timing, run=run,
                          retrieved=retrieved)]
    for reranker in rerankers:
        weight = reranker.weight_for(task.key)
        if weight == 0.0:  # the fused ranking is retrieval's whatever the scores: none are computed
            for entry in retrieved.values():
                entry.rerank_scores[reranker.name] = np.zeros(min(reranker.top_k, len(entry.dids)))
            rerank_timing = {"rerank": 0.0, "rerank_skipped": True}
        else:
            rerank_seconds = rerank_top_k(reranker, queries, instructions, retrieved, candidates, show_progress)
            rerank_timing = {"rerank": rerank_seconds, "rerank_per_query": rerank_seconds / len(queries)}
        fused = {qid: reranked_run(r, reranker.name, weight) for qid, r in retrieved.items()}
        results.append(TaskResult(
            reranker.name, pool, task, score_run(fused, qrels, task), seconds={**timing, **rerank_timing},
            rerank_weight=weight, rerank_top_k=reranker.top_k, run=fused, retrieved=retrieved))
    return results


def choose_rerank_weights(encoder: Encoder, data_root: str | Path, reranker: RerankMethod, *,
                          split: str = "val", pool: str = "local",
                          grid: Sequence[float] = DEFAULT_WEIGHT_GRID, **evaluate_options) -> tuple[RerankMethod, WeightSweep]:
    """Run retrieval + reranking on ``split`` (val) and return the reranker with per-task weights."""
    report = evaluate_mbeir(encoder, data_root, split=split, pools=(pool,), rerankers=(reranker,),
                            **evaluate_options)
    sweep = sweep_rerank_weights(report, reranker.name, pool=pool, grid=grid)
    chosen = RerankMethod(reranker.name, reranker.rerank, reranker.top_k, sweep.best, reranker.default_weight)
    return chosen, sweep


def evaluate_and_write(
    methods: Mapping[str, Encoder],
    data_root: str | Path,
    out_dir: str | Path,
    *,
    command: str,
    results_md: str | Path | None = None,
    title: str = "M-BEIR evaluation",
    rerankers: Mapping[str, Sequence[RerankMethod]] | None = None,
    speed_methods: Sequence[str] | None = None,
    notes: str = "",
    **evaluate_options,
) -> list[Path]:
    """``lamra eval``: evaluate each named encoder (and its rerankers), write ``out_dir/<method>/``
    (results.json + TREC runs) and, with ``results_md``, one page of tables over all of them.

    ``evaluate_options`` go to ``evaluate_mbeir`` (split, pools, tasks, index_dir, batch_size, ...).
    Returns the JSON paths (and the page last, when written).
    """
    from lamra.evaluate.tables import results_page, write_markdown

    written, rows = [], []
    for method, encoder in methods.items():
        report = evaluate_mbeir(encoder, data_root, method=method,
                                rerankers=(rerankers or {}).get(method, ()), **evaluate_options)
        json_path = write_report(report, Path(out_dir) / safe_name(method), command=command)
        written.append(json_path)
        rows.extend(load_results(json_path)["results"])
    if results_md is not None:
        pools = evaluate_options.get("pools", ("local",))
        page = results_page(rows, title=title, pools=pools, speed_methods=speed_methods, notes=notes)
        written.append(write_markdown(results_md, command, page))
    return written
