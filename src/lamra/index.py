"""A FAISS inner-product index over embeddings that knows its string ids.

Embeddings are L2-normalised (``similarity`` "cosine", the default), or kept as the encoder gave them
when it ranks by plain inner product (``similarity`` "dot": a model with an appearance channel,
``lamra.appearance``). The manifest records which, and an index is rebuilt rather than reused when
the encoder's similarity differs.

On disk an index is a directory holding versions and a pointer to the live one::

    CURRENT               the name of the live version, e.g. "v-20261126T194100-1a2b3c4d"
    v-.../manifest.json   model name, dims, count, index type, fingerprints of the pool file and ids
    v-.../ids.json        the candidate ids (M-BEIR dids such as "9:1234"), row i <-> ids[i]
    v-.../embeddings.npy  float32 (count, dims), as indexed (above), memory-mapped on load (the FAISS
                          file too: flat codes and IVF lists are read from disk as searches need them)
    v-.../index.faiss     the FAISS index: exact (flat) by default, or IVF / IVF-PQ / HNSW / any FAISS
                          factory string (``index_type``; names and defaults in ``lamra.index_types``)

(An index written before versions existed, with the four files directly in the directory, still loads.)

It loads without the model (``VectorIndex.load``). ``load`` refuses an index whose pool file has
changed since it was built (``StaleIndexError``), and checks every file against the manifest: the
ids against their fingerprint, the embeddings' and the FAISS index's shapes against count and dims,
and a sample of rows searched in the FAISS index must find themselves, so a stale, truncated or mixed
file is reported by name (``IndexFileError``) instead of returning wrong ids.

A new version is written complete beside the live one, then ``CURRENT`` is replaced in one atomic
rename: a reader (or a kill at any moment) sees the old index or the new one, never none and never
half of one. Versions and temp files a killed writer left behind are removed at the next open that
can take the directory's lock (a writer holds it while it swaps).

``build_index`` encodes a candidate list in batches into a memory-mapped ``.npy`` in a sibling
``<dir>.partial`` directory and records its progress after every chunk: a killed encode, run again
with the same arguments, continues where it stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from lamra.atomic_io import atomic_write_text
from lamra.index_types import build_faiss_index, resolve_index_type, set_search_parameters

FORMAT = "lamra-index/1"
MANIFEST = "manifest.json"
IDS = "ids.json"
EMBEDDINGS = "embeddings.npy"
FAISS_FILE = "index.faiss"
PROGRESS = "progress.json"
CURRENT = "CURRENT"
LOCK = ".lock"
VERSION_PREFIX = "v-"
INTEGRITY_SAMPLE = 8  # rows searched at load: each must find itself (half of them, in an approximate index)

logger = logging.getLogger(__name__)

EncodeFn = Callable[[Sequence[Any]], np.ndarray]

SIMILARITIES = ("cosine", "dot")


def check_similarity(similarity: str) -> str:
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return similarity


def similarity_of(encoder: Any) -> str:
    """How an encoder's vectors are compared: its ``similarity`` attribute, "cosine" when it has none."""
    return check_similarity(getattr(encoder, "similarity", "cosine"))


class IndexFileError(RuntimeError):
    """An index directory that is incomplete, inconsistent or of an unknown format."""


class StaleIndexError(RuntimeError):
    """The index was built from another pool file or another model than the one asked for."""


# --- small helpers ---------------------------------------------------------------------------------


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, streamed (the real M-BEIR global pool is several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def ids_fingerprint(ids: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for did in ids:
        digest.update(did.encode("utf-8") + b"\n")
    return "sha256:" + digest.hexdigest()


def prepare_vectors(vectors: np.ndarray, similarity: str = "cosine", what: str = "vectors") -> np.ndarray:
    """Float32 rows ready to index: unit rows for "cosine", checked but unchanged for "dot"."""
    if check_similarity(similarity) == "cosine":
        return l2_normalise(vectors, what)
    vectors = _checked_rows(vectors, what)
    if vectors.shape[0] and float(np.abs(vectors).sum(axis=1).min()) == 0.0:
        row = int(np.argmin(np.abs(vectors).sum(axis=1)))
        raise ValueError(f"{what}: row {row} is a zero vector")
    return vectors


def _checked_rows(vectors: np.ndarray, what: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (n, dims), got shape {vectors.shape}")
    if vectors.shape[0] and not np.all(np.isfinite(vectors)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return vectors


def l2_normalise(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    """Return float32 unit rows; a zero row is an encoder bug, so it is refused rather than hidden."""
    vectors = _checked_rows(vectors, what)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if vectors.shape[0] and float(norms.min()) == 0.0:
        row = int(np.argmin(norms[:, 0]))
        raise ValueError(f"{what}: row {row} is a zero vector and cannot be normalised")
    return vectors / norms


def _refuse_duplicate_ids(ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for did in ids:
        if did in seen:
            raise ValueError(f"duplicate candidate id {did!r}")
        seen.add(did)


def _write_json_atomic(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


# --- versions and the CURRENT pointer -------------------------------------------------------------


@contextlib.contextmanager
def _directory_lock(directory: Path, blocking: bool = True):
    """An exclusive lock on the index directory; yields False when not blocking and it is taken."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def live_version(directory: Path) -> Path | None:
    """The directory holding the live files: the version CURRENT names, or the directory itself for
    an index written before versions existed; None when there is no index."""
    pointer = directory / CURRENT
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not name.startswith(VERSION_PREFIX) or "/" in name:
            raise IndexFileError(f"{str(pointer)!r} names {name!r}, not a version of this index")
        return directory / name
    if (directory / MANIFEST).is_file():
        return directory
    return None


def _publish_version(finished: Path, directory: Path) -> None:
    """Move a complete version into ``directory`` and point CURRENT at it (the one atomic step);
    the caller holds the directory's lock."""
    name = f"{VERSION_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    os.replace(finished, directory / name)
    atomic_write_text(directory / CURRENT, name + "\n")
    _remove_leftovers(directory)


def _remove_leftovers(directory: Path) -> None:
    """Versions CURRENT does not name, temp files and a pre-version layout's files (caller holds the lock)."""
    live = live_version(directory)
    for path in directory.iterdir():
        stale_version = path.name.startswith(VERSION_PREFIX) and path != live
        temp = path.name.startswith(".") and path.name != LOCK
        legacy = live != directory and path.name in (MANIFEST, IDS, EMBEDDINGS, FAISS_FILE)
        if stale_version or temp or legacy:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def clean_index_directory(directory: str | os.PathLike) -> None:
    """Remove what a killed writer left behind, unless a writer is at work right now."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    with _directory_lock(directory, blocking=False) as locked:
        if locked:
            _remove_leftovers(directory)


# --- the index -------------------------------------------------------------------------------------


class VectorIndex:
    """Unit vectors + their string ids + a FAISS inner-product index (cosine similarity)."""

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], faiss_index: faiss.Index, manifest: dict):
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self.vectors = vectors
        self.ids = list(ids)
        self.faiss_index = faiss_index
        self.manifest = manifest
        self._rows: dict[str, int] | None = None  # id -> row, built when vectors_of first asks

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        *,
        model_name: str = "unknown",
        pool_path: str | os.PathLike | None = None,
        pool_fingerprint: str | None = None,
        index_type: str | None = None,
        search: dict[str, int] | None = None,
        assume_normalised: bool = False,
        similarity: str = "cosine",
    ) -> "VectorIndex":
        """Index vectors (prepared here for ``similarity``, see ``prepare_vectors``, unless
        ``assume_normalised``: already prepared); duplicate ids are refused.
        ``index_type``: "flat" (default, exact), a name of ``lamra.index_types`` ("ivf[N]", "hnsw-pca",
        ...) or a FAISS factory string; ``search`` overrides its search parameters (``{"nprobe": 32}``, ``{"efSearch": 256}``)."""
        ids = [str(did) for did in ids]
        _refuse_duplicate_ids(ids)
        check_similarity(similarity)
        if not assume_normalised:
            vectors = prepare_vectors(vectors, similarity, "candidate embeddings")
        if pool_path is not None and pool_fingerprint is None:
            pool_fingerprint = file_fingerprint(pool_path)
        kind = resolve_index_type(index_type, len(ids), int(vectors.shape[1]))
        parameters = {**kind.search, **(search or {})}
        manifest = {
            "format": FORMAT,
            "model": model_name,
            "dims": int(vectors.shape[1]),
            "count": len(ids),
            "metric": "inner_product",
            "similarity": similarity,
            "index_type": kind.name,
            "factory": kind.factory,
            "search": parameters,
            "pool_path": str(pool_path) if pool_path is not None else None,
            "pool_fingerprint": pool_fingerprint,
            "ids_fingerprint": ids_fingerprint(ids),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        faiss_index = build_faiss_index(vectors, kind)
        set_search_parameters(faiss_index, parameters)
        return cls(vectors, ids, faiss_index, manifest)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dims(self) -> int:
        return int(self.manifest["dims"])

    @property
    def model_name(self) -> str:
        return self.manifest["model"]

    @property
    def similarity(self) -> str:
        """"cosine" (unit rows) or "dot" (rows as the encoder gave them); older indexes are cosine."""
        return self.manifest.get("similarity", "cosine")

    @property
    def exact(self) -> bool:
        factory = self.manifest.get("factory") or ("Flat" if self.manifest.get("index_type", "flat") == "flat" else "")
        return factory == "Flat"

    def set_search(self, **parameters: int) -> None:
        """Change an approximate index's search parameters (``nprobe=32``, ``efSearch=256``) in memory."""
        set_search_parameters(self.faiss_index, parameters)
        self.manifest["search"] = {**self.manifest.get("search", {}), **parameters}

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k by inner product: ``(scores (n, k') float32, ids n lists of k' dids)``, best first.

        ``k`` larger than the index is cut to its size; an IVF index can return fewer than k hits
        for a query (empty probed lists): those slots are dropped from its id list and hold -inf.
        """
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dims:
            raise ValueError(f"query vectors of shape {queries.shape} for an index of {self.dims} dims")
        if k < 1:
            raise ValueError(f"k={k}: must be at least 1")
        k = min(k, len(self))
        if len(queries) == 0 or k == 0:
            return np.zeros((len(queries), k), np.float32), [[] for _ in range(len(queries))]
        scores, rows = self.faiss_index.search(np.ascontiguousarray(queries), k)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        ids = [[self.ids[row] for row in query_rows if row >= 0] for query_rows in rows]
        return scores, ids

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of these ids, in their order (query expansion reads its hits' vectors)."""
        if self._rows is None:
            self._rows = {did: row for row, did in enumerate(self.ids)}
        try:
            rows = [self._rows[did] for did in ids]
        except KeyError as error:
            raise KeyError(f"id {error.args[0]!r} is not in this index") from None
        return np.asarray(self.vectors[rows], dtype=np.float32).reshape(len(rows), self.dims)

    def check_fresh(self, *, pool_path: str | os.PathLike | None = None, model_name: str | None = None) -> None:
        """Raise StaleIndexError if the index was built from another pool file or model."""
        if model_name is not None and model_name != self.model_name:
            raise StaleIndexError(f"index was built with model {self.model_name!r}, not {model_name!r}")
        if pool_path is not None:
            current = file_fingerprint(pool_path)
            if current != self.manifest.get("pool_fingerprint"):
                raise StaleIndexError(
                    f"pool file {str(pool_path)!r} has changed since the index was built "
                    f"(index {self.manifest.get('pool_fingerprint')}, file {current}); rebuild the index"
                )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a new version of the index and make it live atomically (see the module doc)."""
        target = Path(directory)
        with _directory_lock(target):  # held while writing, so no cleanup takes the temp files away
            tmp = target / f".tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                np.save(tmp / EMBEDDINGS, np.asarray(self.vectors, dtype=np.float32))
                self._write_files(tmp)
                _publish_version(tmp, target)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _write_files(self, directory: Path) -> None:
        """Everything but the embeddings (which ``build_index`` has already written in place)."""
        _write_json_atomic(directory / IDS, self.ids)
        faiss.write_index(self.faiss_index, str(directory / FAISS_FILE))
        _write_json_atomic(directory / MANIFEST, self.manifest)  # last: its presence marks a whole index

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        pool_path: str | os.PathLike | None = None,
        model_name: str | None = None,
        mmap: bool = True,
    ) -> "VectorIndex":
        """Load a saved index (no model needed); with ``pool_path``/``model_name`` it must match them.

        Every file is checked against the manifest (module doc); a mismatch or an unreadable file
        raises ``IndexFileError`` naming the file. Leftovers of a killed writer are removed first.
        """
        directory = Path(directory)
        clean_index_directory(directory)
        version = live_version(directory) if directory.is_dir() else None
        if version is None:
            raise FileNotFoundError(f"no index at {str(directory)!r} (missing {CURRENT} and {MANIFEST})")
        try:
            index = cls._load_version(version, mmap)
        except IndexFileError:
            if live_version(directory) == version:
                raise
            index = cls._load_version(live_version(directory), mmap)  # a writer swapped it meanwhile
        index.check_fresh(pool_path=pool_path, model_name=model_name)
        return index

    @classmethod
    def _load_version(cls, version: Path, mmap: bool) -> "VectorIndex":
        manifest = _read_json(version / MANIFEST, dict)
        if manifest.get("format") != FORMAT:
            raise IndexFileError(f"{str(version / MANIFEST)!r}: unknown index format {manifest.get('format')!r}")
        try:
            count, dims = int(manifest["count"]), int(manifest["dims"])
        except (KeyError, TypeError, ValueError):
            raise IndexFileError(f"{str(version / MANIFEST)!r}: count and dims missing or not numbers") from None
        ids = _read_json(version / IDS, list)
        if len(ids) != count or ids_fingerprint([str(i) for i in ids]) != manifest.get("ids_fingerprint"):
            raise IndexFileError(f"{str(version / IDS)!r} does not match its manifest ({len(ids)} ids, "
                                 f"manifest {count}; fingerprints differ or are missing)")
        try:
            vectors = np.load(version / EMBEDDINGS, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as error:
            raise IndexFileError(f"cannot read {str(version / EMBEDDINGS)!r}: {error}") from None
        if vectors.shape != (count, dims):
            raise IndexFileError(f"{str(version / EMBEDDINGS)!r} holds {vectors.shape}, the manifest says "
                                 f"({count}, {dims})")
        try:
            faiss_index = _read_faiss(version / FAISS_FILE, manifest.get("factory", ""), mmap)
        except RuntimeError as error:
            raise IndexFileError(f"cannot read {str(version / FAISS_FILE)!r}: {str(error).splitlines()[0]}") from None
        index = cls(vectors, ids, faiss_index, manifest)
        parameters = manifest.get("search")
        if parameters is None and manifest.get("nprobe"):  # written before index types had names
            parameters = {"nprobe": manifest["nprobe"]}
        try:
            set_search_parameters(faiss_index, parameters or {})
        except ValueError as error:
            raise IndexFileError(f"{str(version / MANIFEST)!r}: {error}") from None
        index._check_faiss(version / FAISS_FILE)
        return index

    def _check_faiss(self, path: Path) -> None:
        """The FAISS file must hold these rows: its size and width, and sampled rows find themselves."""
        if self.faiss_index.ntotal != len(self.ids) or self.faiss_index.d != self.dims:
            raise IndexFileError(f"{str(path)!r} holds {self.faiss_index.ntotal} vectors of {self.faiss_index.d} "
                                 f"dims, the manifest says {len(self.ids)} of {self.dims}")
        if not len(self.ids):
            return
        rows = np.unique(np.linspace(0, len(self.ids) - 1, min(INTEGRITY_SAMPLE, len(self.ids))).astype(int))
        scores, found = self.faiss_index.search(np.ascontiguousarray(self.vectors[rows], dtype=np.float32), 10)
        # the row itself, or an exact duplicate vector, must come back with cosine 1; an approximate
        # index may miss a few (PQ codes are lossy, IVF probes some lists), a foreign file misses all
        missed = [int(row) for row, row_scores, row_found in zip(rows, scores, found)
                  if row not in row_found and not (row_scores[0] > 0.9999)]
        allowed = 0 if self.exact else len(rows) // 2
        if len(missed) > allowed:
            raise IndexFileError(f"{str(path)!r} does not hold the embeddings of its directory (row {missed[0]} "
                                 "is not found): a file of another index? Rebuild it")


def _read_faiss(path: Path, factory: str, mmap: bool) -> faiss.Index:
    """Memory-mapped where FAISS can (flat codes; IVF lists), so a pool larger than RAM searches."""
    if mmap:
        flags = faiss.IO_FLAG_MMAP if factory.startswith("IVF") else faiss.IO_FLAG_MMAP_IFC
        try:
            return faiss.read_index(str(path), flags)
        except RuntimeError:
            pass  # a type FAISS cannot map: read it whole (a corrupt file fails again below)
    return faiss.read_index(str(path))


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFileError(f"{str(path)!r} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(f"cannot read {str(path)!r}: {error}") from None
    if not isinstance(value, kind):
        raise IndexFileError(f"{str(path)!r} holds a {type(value).__name__}, expected a {kind.__name__}")
    return value


# --- resumable build -------------------------------------------------------------------------------


def encode_in_batches(
    encode: EncodeFn,
    items: Sequence[Any],
    *,
    batch_size: int = 32,
    show_progress: bool = True,
    desc: str = "encoding",
    similarity: str = "cosine",
) -> np.ndarray:
    """Encode everything in memory (no resume); float32 rows prepared for ``similarity``."""
    chunks = []
    with tqdm(total=len(items), desc=desc, unit="item", disable=not show_progress) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            chunks.append(_encode_batch(encode, batch, start, similarity))
            bar.update(len(batch))
    if not chunks:
        raise ValueError("nothing to encode: the item list is empty")
    return np.concatenate(chunks)


def _encode_batch(encode: EncodeFn, batch: Sequence[Any], start: int, similarity: str) -> np.ndarray:
    vectors = np.asarray(encode(batch), dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(batch):
        raise ValueError(
            f"encode returned shape {vectors.shape} for a batch of {len(batch)} items (items {start}..)"
        )
    return prepare_vectors(vectors, similarity, f"embeddings of items {start}..{start + len(batch) - 1}")


def build_index(
    encode: EncodeFn,
    candidates: Sequence[Any],
    ids: Sequence[str],
    directory: str | os.PathLike,
    *,
    model_name: str,
    pool_path: str | os.PathLike | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    index_type: str | None = None,
    search: dict[str, int] | None = None,
    show_progress: bool = True,
    similarity: str = "cosine",
) -> VectorIndex:
    """Encode ``candidates`` with ``encode(batch) -> (n, dims)`` and save a VectorIndex at ``directory``.

    Resumable: embeddings go to ``<directory>.partial/embeddings.npy`` (memory-mapped) and
    ``progress.json`` there records how many rows are done after every ``chunk_size`` items. A rerun
    with the same candidates, ids, model and pool continues from that row; a rerun with anything else
    starts over. When every row is done the index is built and the directory renamed into place.
    """
    ids = [str(did) for did in ids]
    if len(ids) != len(candidates):
        raise ValueError(f"{len(ids)} ids for {len(candidates)} candidates")
    if not candidates:
        raise ValueError(f"no candidates to index for {str(directory)!r}")
    _refuse_duplicate_ids(ids)  # before hours of encoding, not after
    target = Path(directory)
    partial = target.with_name(target.name + ".partial")
    job = {
        "model": model_name,
        "count": len(ids),
        "ids_fingerprint": ids_fingerprint(ids),
        "pool_fingerprint": file_fingerprint(pool_path) if pool_path is not None else None,
        "similarity": similarity,
    }
    done, vectors = _open_partial(partial, job)
    if vectors is not None:
        resolve_index_type(index_type, len(ids), int(vectors.shape[1]))  # a bad type fails now, not at the end

    chunk_size = max(chunk_size, batch_size)
    with tqdm(total=len(ids), initial=done, desc=f"encoding {target.name}", unit="item",
              disable=not show_progress) as bar:
        while done < len(ids):
            chunk_end = min(done + chunk_size, len(ids))
            for start in range(done, chunk_end, batch_size):
                end = min(start + batch_size, chunk_end)
                batch_vectors = _encode_batch(encode, candidates[start:end], start, similarity)
                if vectors is None:  # the first batch tells the dimension
                    resolve_index_type(index_type, len(ids), int(batch_vectors.shape[1]))
                    vectors = _create_partial(partial, job, batch_vectors.shape[1])
                if batch_vectors.shape[1] != vectors.shape[1]:
                    raise ValueError(f"encode returned {batch_vectors.shape[1]} dims, earlier batches {vectors.shape[1]}")
                vectors[start:end] = batch_vectors
                bar.update(end - start)
            vectors.flush()  # rows on disk before the marker says so
            done = chunk_end
            _write_json_atomic(partial / PROGRESS, {**job, "dims": int(vectors.shape[1]), "done": done})

    index = VectorIndex.from_vectors(
        vectors, ids, model_name=model_name, pool_path=pool_path,
        pool_fingerprint=job["pool_fingerprint"], index_type=index_type, search=search,
        assume_normalised=True, similarity=similarity,  # every batch was prepared as it was written
    )
    index._write_files(partial)
    (partial / PROGRESS).unlink()
    del vectors, index
    with _directory_lock(target):
        _publish_version(partial, target)
    return VectorIndex.load(target)


def _open_partial(partial: Path, job: dict) -> tuple[int, np.memmap | None]:
    """Resume a matching partial build, or clear a non-matching one."""
    progress_path = partial / PROGRESS
    if progress_path.is_file() and (partial / EMBEDDINGS).is_file():
        try:
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            progress = {}
        if all(progress.get(key) == value for key, value in job.items()):
            vectors = np.load(partial / EMBEDDINGS, mmap_mode="r+")
            if vectors.shape == (job["count"], progress.get("dims")):
                return int(progress["done"]), vectors
    if partial.exists():
        shutil.rmtree(partial)
    return 0, None


def _create_partial(partial: Path, job: dict, dims: int) -> np.memmap:
    partial.mkdir(parents=True, exist_ok=True)
    vectors = np.lib.format.open_memmap(partial / EMBEDDINGS, mode="w+", dtype=np.float32,
                                        shape=(job["count"], dims))
    _write_json_atomic(partial / PROGRESS, {**job, "dims": dims, "done": 0})
    return vectors


def load_or_build_index(
    encode: EncodeFn,
    candidates: Sequence[Any],
    ids: Sequence[str],
    directory: str | os.PathLike,
    *,
    model_name: str,
    pool_path: str | os.PathLike | None = None,
    **build_options,
) -> VectorIndex:
    """Reuse the index at ``directory`` if it matches the model, pool file, ids, index type and
    similarity; else (re)build it (a corrupt or inconsistent index is rebuilt too, with a warning that
    says why)."""
    wanted_type = (build_options.get("index_type") or "flat").strip()
    wanted_similarity = build_options.get("similarity", "cosine")
    try:
        index = VectorIndex.load(directory, pool_path=pool_path, model_name=model_name)
        if (index.manifest.get("ids_fingerprint") == ids_fingerprint([str(d) for d in ids])
                and index.manifest.get("index_type", "flat") == wanted_type
                and index.similarity == wanted_similarity):
            return index
    except (FileNotFoundError, StaleIndexError):
        pass
    except IndexFileError as error:
        logger.warning("rebuilding the index at %s: %s", directory, error)
    return build_index(encode, candidates, ids, directory, model_name=model_name, pool_path=pool_path,
                       **build_options)
