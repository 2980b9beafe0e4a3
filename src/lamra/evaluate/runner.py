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
3. searches the top ``run_depth`` candidates and scores them: R@K as M-BEIR's hit rate (R@1/5/10, or
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

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from lamra.data.mbeir import (
    TASKS,
    MBEIRCandidate,
    MBEIRDataset,
    MBEIRQuery,
    atomic_write_text,
    cand_pool_dict,
    global_pool_relpath,
    normalize_modality,
    read_jsonl,
)
from lamra.evaluate.metrics import evaluate_run, headline_metric_for, recall_ks_for
from lamra.evaluate.trec import trec_order, write_run, write_trec_qrels
from lamra.index import VectorIndex, encode_in_batches, load_or_build_index
from lamra.items import InputError
from lamra.prompts import format_mbeir_text

POOLS = ("local", "global")
MAP_KS = (5,)
MIN_APPROXIMATE_POOL = 10_000  # pools smaller than this are searched exactly whatever index_type says
DEFAULT_WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


class Encoder(Protocol):
    def encode(self, items: Sequence[Any], instruction: str | None = None, batch_size: int = 32,
               show_progress: bool = False, image_root: str | Path | None = None,
               role: str = "query") -> np.ndarray: ...


# rerank(query item, candidate items, their retrieval scores) -> one rerank score per candidate
RerankFn = Callable[[dict, list[dict], np.ndarray], Sequence[float]]


class ModalityNotSupported(InputError):
    """Raised by an encoder for an item it cannot encode (a text-only model given an image)."""


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


@dataclass(frozen=True)
class EvalTask:
    dataset: str  # the dataset part of the file names, e.g. "mscoco" or "emojiname"
    task_id: int

    @property
    def key(self) -> str:
        return f"{self.dataset}_task{self.task_id}"

    @property
    def query_modality(self) -> str:
        return TASKS[self.task_id][0]

    @property
    def candidate_modality(self) -> str:
        return TASKS[self.task_id][1]


@dataclass
class Retrieved:
    """One query's retrieved candidates, best first, with the rerank scores of each reranker's top-k."""

    dids: list[str]
    scores: np.ndarray
    rerank_scores: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TaskResult:
    """One cell row of the tables: a method on one task and pool."""

    method: str
    pool: str
    task: EvalTask
    metrics: dict[str, float] | None = None  # None when skipped
    skipped: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    rerank_weight: float | None = None
    rerank_top_k: int | None = None
    run: dict[str, list[tuple[str, float]]] = field(default_factory=dict, repr=False)  # qid -> ranked
    retrieved: dict[str, Retrieved] = field(default_factory=dict, repr=False)  # for weight sweeps

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "pool": self.pool,
            "task": self.task.key,
            "dataset": self.task.dataset,
            "task_id": self.task.task_id,
            "headline": headline_metric_for(self.task.dataset),
            "metrics": self.metrics,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "rerank_weight": self.rerank_weight,
            "rerank_top_k": self.rerank_top_k,
        }


@dataclass
class EvaluationReport:
    split: str
    data_root: str
    model_name: str
    settings: dict[str, Any]
    results: list[TaskResult]

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "data_root": self.data_root,
            "model": self.model_name,
            "settings": self.settings,
            "results": [result.to_json() for result in self.results],
        }

    def result(self, method: str, pool: str, task_key: str) -> TaskResult:
        for result in self.results:
            if (result.method, result.pool, result.task.key) == (method, pool, task_key):
                return result
        raise KeyError(f"no result for method {method!r}, pool {pool!r}, task {task_key!r}")


# --- instructions ----------------------------------------------------------------------------------


def positive_modality(query: MBEIRQuery, pool: Mapping[str, MBEIRCandidate], task: EvalTask) -> str:
    """The candidate modality that keys the query's instruction: that of its first positive from its
    own dataset (UniIR's eval; OVEN/InfoSeek list positives of other datasets too), else the task's."""
    own = [did for did in query.pos_cand_list if did.split(":", 1)[0] == query.dataset_id]
    for did in own or query.pos_cand_list:
        if did in pool:
            return pool[did].modality
    return task.candidate_modality


def pick_instruction(data: MBEIRDataset, query: MBEIRQuery, candidate_modality: str, *,
                     choice: str = "random", seed: int = 0) -> str | None:
    """The query's instruction: ``choice="random"`` draws a paraphrase from a generator seeded by
    (seed, qid); ``"first"`` takes the first paraphrase of the TSV row; ``"none"`` gives none (the
    query alone, to see how much a model leans on the instruction)."""
    if choice == "none":
        return None
    if choice == "random":
        rng = random.Random(f"{seed}:{query.qid}")  # str seeds hash with sha512: stable across runs
    elif choice == "first":
        rng = None
    else:
        raise ValueError(f"instruction choice {choice!r}: expected 'random', 'first' or 'none'")
    return data.instruction_for(query.qid, query.query_modality, candidate_modality, rng=rng)


# --- items given to encoders and rerankers ---------------------------------------------------------


def query_item(query: MBEIRQuery, instruction: str | None = None) -> dict[str, Any]:
    """The query an encoder sees (``encode`` adds the instruction: ``f"{instruction} {txt}"``).

    The official text is ``format_mbeir_text(f"{instruction} {query_txt}")``: the query's own first
    letter is not capitalised, only a final full stop added. ``txt`` is chosen so that the encoder's
    join gives exactly that string.
    """
    txt = format_mbeir_text(query.query_txt) or None
    if instruction and query.query_txt and query.query_txt.strip():
        full, prefix = format_mbeir_text(f"{instruction} {query.query_txt}"), f"{instruction} "
        if full.startswith(prefix):
            txt = full[len(prefix):]
    return {"qid": query.qid, "txt": txt, "img_path": query.query_img_path or None,
            "modality": query.query_modality}


def candidate_item(candidate: MBEIRCandidate) -> dict[str, Any]:
    return {"did": candidate.did, "txt": format_mbeir_text(candidate.txt) or None,
            "img_path": candidate.img_path or None, "modality": candidate.modality}


def rerank_query_item(query: MBEIRQuery, instruction: str | None) -> dict[str, Any]:
    """The query a reranker sees: the instruction joined to its text, as the official rerank data does."""
    item = query_item(query)
    joined = f"{instruction} {query.query_txt or ''}" if instruction else query.query_txt or ""
    item["txt"] = format_mbeir_text(joined) or None
    item["instruction"] = instruction
    return item


def _modalities_of(items: Iterable[Mapping[str, Any]]) -> set[str]:
    found = set()
    for item in items:
        found.update(normalize_modality(item["modality"]).split(","))
    return found


def _unsupported(encoder: Any, modalities: set[str]) -> set[str]:
    supported = getattr(encoder, "supported_modalities", None)
    return set() if supported is None else modalities - set(supported)


# --- retrieval and fusion --------------------------------------------------------------------------


def encode_queries(encoder: Encoder, items: Sequence[dict], instructions: Sequence[str], *, batch_size: int,
                   image_root: Path, show_progress: bool) -> np.ndarray:
    """Encode queries grouped by instruction (``encode`` takes one per call); rows keep input order."""
    groups: dict[str, list[int]] = {}
    for position, instruction in enumerate(instructions):
        groups.setdefault(instruction, []).append(position)
    vectors: np.ndarray | None = None
    with tqdm(total=len(items), desc="encoding queries", unit="query", disable=not show_progress) as bar:
        for instruction, positions in groups.items():
            encoded = np.asarray(encoder.encode([items[p] for p in positions], instruction=instruction,
                                                batch_size=batch_size, show_progress=False,
                                                image_root=image_root), dtype=np.float32)
            if encoded.shape[0] != len(positions):
                raise ValueError(f"encode returned {encoded.shape[0]} vectors for {len(positions)} queries")
            if vectors is None:
                vectors = np.zeros((len(items), encoded.shape[1]), np.float32)
            vectors[positions] = encoded
            bar.update(len(positions))
    if vectors is None:
        raise ValueError("no queries to encode")
    return vectors


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


def _retrieval_run(retrieved: Mapping[str, Retrieved]) -> dict[str, list[tuple[str, float]]]:
    return {qid: trec_order(r.dids, r.scores) for qid, r in retrieved.items()}


def _score(run: Mapping[str, list[tuple[str, float]]], qrels: Mapping[str, set[str]], task: EvalTask) -> dict:
    ranked = {qid: [did for did, _ in pairs] for qid, pairs in run.items()}
    return evaluate_run(ranked, qrels, recall_ks=recall_ks_for(task.dataset), map_ks=MAP_KS)


# --- the evaluation --------------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


class _PoolCache:
    """Candidate records and indexes, built once per pool file, and query vectors, once per task."""

    def __init__(self, encoder, data: MBEIRDataset, *, model_name, batch_size, index_dir, index_type,
                 show_progress):
        self.encoder, self.data, self.model_name = encoder, data, model_name
        self.batch_size, self.index_dir, self.index_type, self.show_progress = batch_size, index_dir, index_type, show_progress
        self.records: dict[Path, dict[str, MBEIRCandidate]] = {}
        self.indexes: dict[Path, tuple[VectorIndex, float]] = {}
        self.pool_modalities: dict[Path, set[str]] = {}
        self.query_vectors: dict[str, tuple[np.ndarray, float]] = {}  # task key -> (vectors, seconds)
        # A did names the same candidate in every pool file (M-BEIR's convention), so a candidate
        # embedded for a local pool is reused for the global pool instead of being encoded again.
        self.candidate_vectors: dict[str, np.ndarray] = {}

    def pool_path(self, pool: str, task: EvalTask, split: str) -> Path:
        if pool == "local":
            return self.data.local_pool_path(task.dataset, task.task_id, split)
        return self.data.path(global_pool_relpath(split))

    def candidates(self, path: Path) -> dict[str, MBEIRCandidate]:
        if path not in self.records:
            self.records[path] = cand_pool_dict(read_jsonl(path, "candidate"))
        return self.records[path]

    def modalities(self, path: Path) -> set[str]:
        """"text" and/or "image": what an encoder must handle to index this pool."""
        if path not in self.pool_modalities:
            self.pool_modalities[path] = _modalities_of(candidate_item(c) for c in self.candidates(path).values())
        return self.pool_modalities[path]

    def index(self, path: Path) -> tuple[VectorIndex, float]:
        """The pool's index and the seconds spent building or loading it: counted once, for the first
        task that asks (the global pool serves every task), 0 for the others."""
        if path in self.indexes:
            return self.indexes[path][0], 0.0
        candidates = self.candidates(path)
        ids = list(candidates)
        items = [candidate_item(candidates[did]) for did in ids]
        root = self.data.root

        def encode(batch):
            return self.encoder.encode(batch, batch_size=self.batch_size, show_progress=False,
                                       image_root=root, role="document")

        # approximate search only pays off on large pools: small (local) pools stay exact
        index_type = self.index_type if len(ids) >= MIN_APPROXIMATE_POOL else "flat"
        start = time.perf_counter()
        if self.index_dir is not None:
            directory = Path(self.index_dir) / _safe_name(self.model_name) / path.stem
            index = load_or_build_index(encode, items, ids, directory, model_name=self.model_name,
                                        pool_path=path, batch_size=self.batch_size, index_type=index_type,
                                        show_progress=self.show_progress)
        else:
            missing = [i for i, did in enumerate(ids) if did not in self.candidate_vectors]
            if missing:
                fresh = encode_in_batches(encode, [items[i] for i in missing], batch_size=self.batch_size,
                                          show_progress=self.show_progress, desc=f"encoding {path.stem}")
                self.candidate_vectors.update((ids[i], vector) for i, vector in zip(missing, fresh))
            vectors = np.stack([self.candidate_vectors[did] for did in ids])
            index = VectorIndex.from_vectors(vectors, ids, model_name=self.model_name, index_type=index_type,
                                             assume_normalised=True)
        self.indexes[path] = (index, time.perf_counter() - start)
        return self.indexes[path]


def list_tasks(data: MBEIRDataset, split: str, only: Iterable[str] | None = None) -> list[EvalTask]:
    """The split's tasks, in M-BEIR's table order (task id, then dataset); ``only`` filters by task
    key ("mscoco_task0") or dataset name."""
    tasks = [EvalTask(name, task_id) for name, task_id in data.tasks(split)]
    if not tasks:
        raise InputError(f"no query files under {str(data.root / 'query' / split)!r}")
    if only is not None:
        wanted = {name.lower() for name in only}
        tasks = [t for t in tasks if t.key in wanted or t.dataset in wanted]
        if not tasks:
            raise InputError(f"none of the tasks {sorted(wanted)} is in split {split!r} of {str(data.root)!r}")
    return sorted(tasks, key=lambda t: (t.task_id, t.dataset))


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
    cache = _PoolCache(encoder, data, model_name=model_name, batch_size=batch_size, index_dir=index_dir,
                       index_type=index_type, show_progress=show_progress)
    results = []
    for task in list_tasks(data, split, tasks):
        queries = sample_queries(list(data.queries(split, task.dataset, task.task_id)), queries_per_task,
                                 f"{seed}:{task.key}")
        qrels = data.qrels(split, task.dataset, task.task_id)
        if queries_per_task is not None:  # a sample is scored over its own queries only
            qrels = {q.qid: qrels[q.qid] for q in queries if q.qid in qrels}
        local = cache.candidates(cache.pool_path("local", task, split))
        instructions = [pick_instruction(data, q, positive_modality(q, local, task), choice=instruction_choice,
                                         seed=seed) for q in queries]
        for pool in pools:
            results.extend(_evaluate_task_pool(
                encoder, cache, data, task, pool, split, queries, instructions, qrels, method, rerankers,
                batch_size=batch_size, run_depth=run_depth, show_progress=show_progress))
    settings = {"pools": list(pools), "instruction_choice": instruction_choice,
                "instructions": str(data.instructions_path), "seed": seed,
                "run_depth": run_depth, "index": index_type,
                "queries_per_task": queries_per_task,
                "rerankers": {r.name: {"top_k": r.top_k, "weights": dict(r.weights),
                                       "default_weight": r.default_weight} for r in rerankers}}
    return EvaluationReport(split, str(data.root), model_name, settings, results)


def sample_queries(queries: list[MBEIRQuery], count: int | None, seed: str) -> list[MBEIRQuery]:
    """``count`` of ``queries`` drawn with ``seed``, in their original order (all when count is None)."""
    if count is None or count >= len(queries):
        return queries
    if count < 1:
        raise ValueError(f"queries_per_task must be at least 1, got {count}")
    keep = set(random.Random(seed).sample(range(len(queries)), count))
    return [query for i, query in enumerate(queries) if i in keep]


def _evaluate_task_pool(encoder, cache: _PoolCache, data: MBEIRDataset, task: EvalTask, pool: str, split: str,
                        queries: list[MBEIRQuery], instructions: list[str], qrels, method: str,
                        rerankers: Sequence[RerankMethod], *, batch_size: int, run_depth: int,
                        show_progress: bool) -> list[TaskResult]:
    methods = [method] + [r.name for r in rerankers]
    path = cache.pool_path(pool, task, split)
    candidates = cache.candidates(path)
    items = [query_item(q, instruction) for q, instruction in zip(queries, instructions)]
    missing_in_queries = _unsupported(encoder, _modalities_of(items))
    missing_in_pool = _unsupported(encoder, cache.modalities(path))
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
    scores, ids = index.search(query_vectors, max(run_depth, max(recall_ks_for(task.dataset))))
    search_seconds = time.perf_counter() - start
    retrieved = {q.qid: Retrieved(ids[row], scores[row, : len(ids[row])]) for row, q in enumerate(queries)}

    timing = {"index_build": index_seconds, "encode_queries": encode_seconds, "search": search_seconds,
              "per_query": (encode_seconds + search_seconds) / len(queries)}
    run = _retrieval_run(retrieved)
    results = [TaskResult(method, pool, task, _score(run, qrels, task), seconds=timing, run=run,
                          retrieved=retrieved)]
    for reranker in rerankers:
        rerank_seconds = _rerank_all(reranker, queries, instructions, retrieved, candidates, show_progress)
        weight = reranker.weight_for(task.key)
        fused = {qid: reranked_run(r, reranker.name, weight) for qid, r in retrieved.items()}
        results.append(TaskResult(
            reranker.name, pool, task, _score(fused, qrels, task),
            seconds={**timing, "rerank": rerank_seconds, "rerank_per_query": rerank_seconds / len(queries)},
            rerank_weight=weight, rerank_top_k=reranker.top_k, run=fused, retrieved=retrieved))
    return results


def _rerank_all(reranker: RerankMethod, queries: list[MBEIRQuery], instructions: list[str],
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


def model_label(encoder: Any) -> str:
    return getattr(encoder, "name", None) or type(encoder).__name__


# --- choosing fusion weights on val ----------------------------------------------------------------


@dataclass
class WeightSweep:
    best: dict[str, float]  # task key -> chosen w
    table: dict[str, dict[float, float]]  # task key -> {w: headline metric on val}


def sweep_rerank_weights(report: EvaluationReport, reranker: str, *, pool: str = "local",
                         grid: Sequence[float] = DEFAULT_WEIGHT_GRID, metric: str | None = None) -> WeightSweep:
    """For each task, the w of ``grid`` with the best ``metric`` (default: the headline metric, R@5;
    R@10 fashion) on the report's split; ties go to the w nearest the default 1.0. Refuses a
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
            w: _score({qid: reranked_run(r, reranker, w) for qid, r in result.retrieved.items()}, qrels, result.task)[headline]
            for w in grid
        }
        top = max(table[result.task.key].values())
        tied = [w for w, value in table[result.task.key].items() if math.isclose(value, top, abs_tol=1e-12)]
        best[result.task.key] = min(tied, key=lambda w: (abs(w - 1.0), w))
    if not table:
        raise ValueError(f"the report has no results of reranker {reranker!r} on the {pool} pool")
    return WeightSweep(best, table)


def choose_rerank_weights(encoder: Encoder, data_root: str | Path, reranker: RerankMethod, *,
                          split: str = "val", pool: str = "local",
                          grid: Sequence[float] = DEFAULT_WEIGHT_GRID, **evaluate_options) -> tuple[RerankMethod, WeightSweep]:
    """Run retrieval + reranking on ``split`` (val) and return the reranker with per-task weights."""
    report = evaluate_mbeir(encoder, data_root, split=split, pools=(pool,), rerankers=(reranker,),
                            **evaluate_options)
    sweep = sweep_rerank_weights(report, reranker.name, pool=pool, grid=grid)
    chosen = RerankMethod(reranker.name, reranker.rerank, reranker.top_k, sweep.best, reranker.default_weight)
    return chosen, sweep


# --- writing it down -------------------------------------------------------------------------------


def write_report(report: EvaluationReport, out_dir: str | Path, *, command: str) -> Path:
    """Write ``results.json`` (every number, the command, the settings) and one TREC run per
    (method, pool, task) under ``runs/`` with trec_eval qrels under ``qrels/``; returns the JSON path."""
    out_dir = Path(out_dir)
    payload = {"command": command, **report.to_json()}
    data = MBEIRDataset(report.data_root)
    written_qrels = set()
    for result, entry in zip(report.results, payload["results"]):
        if result.skipped:
            continue
        run_name = _safe_name(f"{result.method}.{result.pool}")
        run_path = out_dir / "runs" / f"{run_name}.{result.task.key}.trec"
        write_run(run_path, result.run, run_name)
        qrels_path = out_dir / "qrels" / f"{result.task.key}.{report.split}.qrels"
        if qrels_path not in written_qrels:
            write_trec_qrels(qrels_path, data.qrels(report.split, result.task.dataset, result.task.task_id))
            written_qrels.add(qrels_path)
        entry["run_file"] = str(run_path.relative_to(out_dir))
        entry["qrels_file"] = str(qrels_path.relative_to(out_dir))
    json_path = out_dir / "results.json"
    atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n")
    return json_path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` written by ``write_report`` (for tables that merge several runs)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- what the CLI calls ----------------------------------------------------------------------------


def pool_image_root(pool_path: str | Path, image_root: str | Path | None = None) -> Path:
    """Where a pool's img_path values are relative to: ``image_root``, else the M-BEIR data root
    (two levels above cand_pool/<local|global>/)."""
    return Path(image_root) if image_root is not None else Path(pool_path).resolve().parents[2]


def index_pool(encoder: Encoder | Callable[[], Encoder], pool_path: str | Path, directory: str | Path, *,
               model_name: str, image_root: str | Path | None = None, batch_size: int = 32,
               index_type: str = "flat", show_progress: bool = True) -> VectorIndex:
    """``lamra index``: encode an M-BEIR candidate pool file into a saved, resumable index.

    An up-to-date index at ``directory`` (same model, same pool file) is reused as it is. ``encoder``
    may be a function that loads it: it is called after the pool file has been read and checked,
    so a bad line is reported without waiting for a model.
    """
    pool_path = Path(pool_path)
    candidates = cand_pool_dict(read_jsonl(pool_path, "candidate"))
    if not hasattr(encoder, "encode"):
        encoder = encoder()
    ids = list(candidates)
    items = [candidate_item(candidates[did]) for did in ids]
    root = pool_image_root(pool_path, image_root)

    def encode(batch):
        return encoder.encode(batch, batch_size=batch_size, show_progress=False, image_root=root, role="document")

    return load_or_build_index(encode, items, ids, directory, model_name=model_name, pool_path=pool_path,
                               batch_size=batch_size, index_type=index_type, show_progress=show_progress)


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
        json_path = write_report(report, Path(out_dir) / _safe_name(method), command=command)
        written.append(json_path)
        rows.extend(load_results(json_path)["results"])
    if results_md is not None:
        pools = evaluate_options.get("pools", ("local",))
        page = results_page(rows, title=title, pools=pools, speed_methods=speed_methods, notes=notes)
        written.append(write_markdown(results_md, command, page))
    return written
