"""``lamra index POOL --out DIR --ray [ADDRESS]``: encode a candidate pool on a Ray cluster.

The pool's jsonl streams in through Ray Data (``read_text``: one row a line, parsed and checked by
the workers with the same rules as ``lamra index``), an actor pool of ``workers`` model replicas
encodes it (each loads the model once), and the driver writes each encoded batch as a shard,
``<DIR>.ray/shard-<id>.npz`` (the dids and their float32 unit vectors), as it arrives. When
every candidate has a vector, the shards are merged in the pool's order into the index that
``lamra index`` writes (the same format, ``VectorIndex.load`` reads it) and the shard folder goes.

Resumable: a rerun with the same pool and model reads the shards already written and sends only
the candidates that have none through the cluster (a bad ``index_type``, found at the merge, loses
no encoding either: rerun with a good one). Without ``address`` a local Ray instance is
started (the embedded default: one worker per ``threads_per_worker`` cores); with one, the run
joins that cluster (``ray start --head`` on one machine, ``ray start --address`` on the others).

Ray is an optional extra: ``pip install 'lamra[ray]'``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lamra.atomic_io import atomic_write
from lamra.data.mbeir import candidate_from_dict, read_jsonl
from lamra.index import (
    IndexFileError, StaleIndexError, VectorIndex, file_fingerprint, ids_fingerprint, prepare_vectors, similarity_of,
)
from lamra.items import InputError

SHARD_PREFIX = "shard-"
JOB_FILE = "job.json"


class _PoolEncoder:
    """A Ray actor: one model replica; a batch of pool lines in, their dids and vectors out."""

    def __init__(self, load_encoder: Callable[[], Any], image_root: str, batch_size: int, threads: int,
                 done: frozenset[str]):
        import torch

        torch.set_num_threads(threads)
        self.encoder = load_encoder()
        self.image_root, self.batch_size, self.done = image_root, batch_size, done

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from lamra.data.mbeir_items import candidate_item

        # the driver has checked every line already (read_jsonl), so a line that fails here changed since
        candidates = [candidate_from_dict(json.loads(text)) for text in batch["text"] if text.strip()]
        candidates = [c for c in candidates if c.did not in self.done]
        if not candidates:
            return {"did": np.zeros(0, object), "vector": np.zeros((0, 1), np.float32),
                    "similarity": np.zeros(0, object)}
        vectors = self.encoder.encode([candidate_item(c) for c in candidates], batch_size=self.batch_size,
                                      show_progress=False, image_root=self.image_root, role="document")
        similarity = similarity_of(self.encoder)
        return {"did": np.array([c.did for c in candidates], object),
                "vector": prepare_vectors(vectors, similarity, "candidate embeddings"),
                "similarity": np.array([similarity] * len(candidates), object)}


def ray_index_pool(
    load_encoder: Callable[[], Any],
    pool_path: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    model_name: str,
    image_root: str | os.PathLike,
    address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    batch_size: int = 32,
    rows_per_task: int = 256,
    index_type: str = "flat",
    ray_init: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> VectorIndex:
    """Encode ``pool_path`` on Ray and save its index at ``directory`` (module doc); returns the index.

    ``load_encoder`` runs in every actor (it must pickle: a module-level function or a
    ``functools.partial`` of one). ``ray_init``: extra ``ray.init`` arguments (a ``runtime_env``, say)."""
    import ray

    pool_path, target = Path(pool_path), Path(directory)
    dids = [record.did for record in read_jsonl(pool_path, "candidate")]  # checks every line first
    if not dids:
        raise InputError(f"no candidates in {str(pool_path)!r}")
    try:  # an up-to-date index is reused, as lamra index does
        ready = VectorIndex.load(target, pool_path=pool_path, model_name=model_name)
        if ready.ids == dids and ready.manifest.get("index_type") == index_type:
            return ready
    except (FileNotFoundError, StaleIndexError, IndexFileError):
        pass
    shards = target.with_name(target.name + ".ray")
    job = {"model": model_name, "pool_fingerprint": file_fingerprint(pool_path), "ids_fingerprint": ids_fingerprint(dids)}
    done = _open_shards(shards, job)

    started = not ray.is_initialized()
    if started:
        options = dict(ray_init or {})
        if address is None:  # the replicas' cores, and one for reading the file and the driver's merge
            options.setdefault("num_cpus", (workers or 1) * threads_per_worker + 1)
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **options)
    try:
        missing = len(dids) - len(done)
        if missing:
            workers = workers or max(1, (int(ray.cluster_resources().get("CPU", 2)) - 1) // threads_per_worker)
            blocks = -(-len(dids) // rows_per_task)  # one task a block: a failed task loses one block's work
            encoded = ray.data.read_text(str(pool_path), override_num_blocks=blocks).map_batches(
                _PoolEncoder, batch_size=rows_per_task, concurrency=workers, num_cpus=threads_per_worker,
                fn_constructor_args=(load_encoder, str(image_root), batch_size, threads_per_worker, frozenset(done)),
            )
            from tqdm.auto import tqdm

            with tqdm(total=len(dids), initial=len(done), desc=f"encoding {target.name} on Ray", unit="item",
                      disable=not show_progress) as bar:
                for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                    if len(batch["did"]):
                        _write_shard(shards, batch)
                        done.update(batch["did"].tolist())
                        bar.update(len(batch["did"]))
    finally:
        if started:
            ray.shutdown()
    return _merge(shards, dids, target, model_name=model_name, pool_path=pool_path, index_type=index_type)


def _open_shards(shards: Path, job: dict) -> set[str]:
    """The dids already encoded by an earlier run of the same job; another job's shards are cleared."""
    job_file = shards / JOB_FILE
    if shards.is_dir():
        try:
            same = json.loads(job_file.read_text()) == job
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            for path in shards.iterdir():
                path.unlink()
    shards.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(job))
    done: set[str] = set()
    for path in sorted(shards.glob(f"{SHARD_PREFIX}*.npz")):
        with np.load(path, allow_pickle=False) as shard:
            done.update(shard["did"].tolist())
    return done


def _write_shard(shards: Path, batch: dict[str, np.ndarray]) -> None:
    def save(temp: Path) -> None:
        with temp.open("wb") as handle:  # a handle: np.savez would add ".npz" to a temp file's name
            np.savez(handle, did=batch["did"].astype(str), vector=batch["vector"].astype(np.float32),
                     similarity=batch["similarity"].astype(str))

    # a kill leaves whole shards or a temp file, never half a shard
    atomic_write(shards / f"{SHARD_PREFIX}{uuid.uuid4().hex}.npz", save)


def _merge(shards: Path, dids: list[str], target: Path, **index_options) -> VectorIndex:
    row_of = {did: row for row, did in enumerate(dids)}
    vectors = None
    filled = np.zeros(len(dids), bool)
    similarities: set[str] = set()
    for path in sorted(shards.glob(f"{SHARD_PREFIX}*.npz")):
        with np.load(path, allow_pickle=False) as shard:
            rows = [row_of[did] for did in shard["did"].tolist()]
            # shards written before indexes recorded their similarity hold unit rows
            similarities.update(shard["similarity"].tolist() if "similarity" in shard.files else ["cosine"])
            if vectors is None:
                vectors = np.lib.format.open_memmap(shards / "merged.npy", mode="w+", dtype=np.float32,
                                                    shape=(len(dids), shard["vector"].shape[1]))
            vectors[rows] = shard["vector"]
            filled[rows] = True
    if vectors is None or not filled.all():
        raise RuntimeError(f"{int((~filled).sum())} candidates have no vector after the Ray run: rerun to finish")
    if len(similarities) != 1:
        raise RuntimeError(f"the Ray run's shards disagree on how vectors compare ({sorted(similarities)}): rerun")
    vectors.flush()
    index = VectorIndex.from_vectors(vectors, dids, assume_normalised=True, similarity=similarities.pop(),
                                     **index_options)
    index.save(target)
    del vectors, index
    for path in shards.iterdir():
        path.unlink()
    shards.rmdir()
    return VectorIndex.load(target)
