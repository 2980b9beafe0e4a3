"""The candidate pools of an evaluation (a task's local pool, the split's global pool): records read
once per pool file, indexed once (cached on disk under ``index_dir``), query vectors once per task."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lamra.data.mbeir import MBEIRCandidate, MBEIRDataset, cand_pool_dict, global_pool_relpath, read_jsonl
from lamra.data.mbeir_items import candidate_item
from lamra.evaluate.queries import modalities_of
from lamra.evaluate.report import safe_name
from lamra.evaluate.tasks import EvalTask
from lamra.index import VectorIndex, encode_in_batches, load_or_build_index, similarity_of

MIN_APPROXIMATE_POOL = 10_000  # pools smaller than this are searched exactly whatever index_type says


class TaskPools:
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
            self.pool_modalities[path] = modalities_of(candidate_item(c) for c in self.candidates(path).values())
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
            # A candidate already embedded for another pool of this evaluation is not encoded again:
            # the local pools and the global pool hold the same items, so this halves a full run.
            fresh = [item for item in batch if item["did"] not in self.candidate_vectors]
            if fresh:
                vectors = self.encoder.encode(fresh, batch_size=self.batch_size, show_progress=False,
                                              image_root=root, role="document")
                self.candidate_vectors.update(zip((item["did"] for item in fresh), vectors))
            return np.stack([self.candidate_vectors[item["did"]] for item in batch])

        # approximate search only pays off on large pools: small (local) pools stay exact
        index_type = self.index_type if len(ids) >= MIN_APPROXIMATE_POOL else "flat"
        similarity = similarity_of(self.encoder)
        start = time.perf_counter()
        if self.index_dir is not None:
            directory = Path(self.index_dir) / safe_name(self.model_name) / path.stem
            index = load_or_build_index(encode, items, ids, directory, model_name=self.model_name,
                                        pool_path=path, batch_size=self.batch_size, index_type=index_type,
                                        show_progress=self.show_progress, similarity=similarity)
            self.candidate_vectors.update(zip(index.ids, index.vectors))  # rows of a loaded index: views
        else:
            vectors = encode_in_batches(encode, items, batch_size=self.batch_size, show_progress=self.show_progress,
                                        desc=f"encoding {path.stem}", similarity=similarity)
            index = VectorIndex.from_vectors(vectors, ids, model_name=self.model_name, index_type=index_type,
                                             assume_normalised=True, similarity=similarity)
        self.indexes[path] = (index, time.perf_counter() - start)
        return self.indexes[path]
