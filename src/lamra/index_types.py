"""FAISS index types by one name: what ``lamra index --index-type`` and ``VectorIndex.from_vectors`` take.

====================  =================================  ==============================================
name                  FAISS factory string               search parameters (defaults)
====================  =================================  ==============================================
``flat``              ``Flat``                           exact
``ivf``, ``ivfN``     ``IVF{N},Flat``                    ``nprobe`` (N / 8, at least 8)
``ivfpq``             ``IVF{N},PQ{dims/8}``              ``nprobe`` (as above); 8 dims per PQ byte
``ivfpqfs``           ``IVF{N},PQ{dims/4}x4fs,RFlat``    ``nprobe`` (as above), ``k_factor_rf`` (32)
``hnsw``, ``hnswM``   ``HNSW{M},Flat`` (M=32)            ``efSearch`` (128)
``hnsw-pca``,         ``PCA{D},HNSW{M},RFlat``           ``efSearch`` (128), ``k_factor_rf`` (8)
``hnswM-pcaD``
anything else         passed to FAISS as it is           FAISS's own defaults
====================  =================================  ==============================================

``N`` (inverted lists) defaults to 4 sqrt(count), FAISS's own guideline, and never more than one
list per 39 vectors (k-means wants 39 training points a list); ``D`` (principal components kept) to
64, or half the dims below 128. Trained types (IVF, PQ, PCA) are trained on a seeded sample of at
most 256 points per list: more adds time, not quality. Every index is built for inner product over
unit vectors (cosine similarity).

The two ``RFlat`` types search a cheap approximation for ``k * k_factor_rf`` candidates, then rank
those by exact inner product (FAISS's IndexRefineFlat keeps the full vectors for that):

- ``ivfpqfs``: 4-bit PQ codes scanned with SIMD lookups (FAISS "fast scan"), many times faster per
  list than float vectors, so a search can afford to visit more lists; the codes order candidates
  coarsely, so the exact pass takes 32 per result wanted (at 1M vectors, nprobe 512: recall@10 0.911
  with 8 at 14.0x flat's speed, 0.983 with 32 at 10.9x; ``results/search.md``);
- ``hnsw-pca``: the graph is built and walked on the first D principal components. Embeddings use a
  few dozen directions (the participation ratio of the compact model's vectors is about 60 of 576),
  so the graph keeps the neighbourhoods at a ninth of the distance cost, and that cheapness buys a
  better graph: efConstruction 160 instead of FAISS's 40.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import faiss
import numpy as np

DEFAULT_HNSW_M = 32
DEFAULT_EF_SEARCH = 128
DEFAULT_PCA_DIMS = 64
PCA_EF_CONSTRUCTION = 160
FAST_SCAN_REFINE_FACTOR = 32  # exact re-ranking of k * 32 candidates: 4-bit codes order coarsely
PCA_REFINE_FACTOR = 8  # the graph on 64 components orders its candidates well already
MIN_POINTS_PER_LIST = 39
MAX_TRAINING_POINTS_PER_LIST = 256
TRAINING_SEED = 1234
ADD_SLICE = 65536  # add in slices so a memory-mapped array is never copied whole


@dataclass(frozen=True)
class IndexType:
    name: str  # what the user asked for
    factory: str  # the FAISS factory string
    search: dict[str, int] = field(default_factory=dict)  # FAISS search parameters
    build: dict[str, int] = field(default_factory=dict)  # FAISS parameters set before vectors are added

    @property
    def exact(self) -> bool:
        return self.factory == "Flat"


def resolve_index_type(name: str | None, count: int, dims: int) -> IndexType:
    """The FAISS factory string and search parameters for ``name`` over ``count`` vectors of ``dims``."""
    name = (name or "flat").strip()
    lowered = name.lower()
    if lowered == "flat":
        return IndexType("flat", "Flat")
    match = re.fullmatch(r"ivf(\d*)(pq|pqfs)?", lowered)
    if match:
        lists = int(match.group(1)) if match.group(1) else default_lists(count)
        if not 1 <= lists <= count:
            raise ValueError(f"index {name!r}: an IVF index needs 1 <= lists <= number of vectors ({count})")
        search = {"nprobe": max(8, lists // 8)}
        if match.group(2) == "pq":
            _check_divisible(name, dims, 8)
            return IndexType(name, f"IVF{lists},PQ{dims // 8}", search)
        if match.group(2) == "pqfs":
            _check_divisible(name, dims, 4)
            return IndexType(name, f"IVF{lists},PQ{dims // 4}x4fs,RFlat", {**search, "k_factor_rf": FAST_SCAN_REFINE_FACTOR})
        return IndexType(name, f"IVF{lists},Flat", search)
    match = re.fullmatch(r"hnsw(\d*)(-pca(\d*))?", lowered)
    if match:
        links = int(match.group(1)) if match.group(1) else DEFAULT_HNSW_M
        if not match.group(2):
            return IndexType(name, f"HNSW{links},Flat", {"efSearch": DEFAULT_EF_SEARCH})
        reduced = int(match.group(3)) if match.group(3) else min(DEFAULT_PCA_DIMS, dims // 2)
        if not 1 <= reduced < dims:
            raise ValueError(f"index {name!r}: PCA needs 1 <= its dims < the vectors' {dims}")
        return IndexType(name, f"PCA{reduced},HNSW{links},RFlat",
                         {"efSearch": DEFAULT_EF_SEARCH, "k_factor_rf": PCA_REFINE_FACTOR},
                         {"efConstruction": PCA_EF_CONSTRUCTION})
    try:  # a FAISS factory string of the user's own
        faiss.index_factory(dims, name, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(f"index {name!r}: neither flat, ivf[N][pq|pqfs], hnsw[M][-pca[D]] nor a FAISS factory string "
                         f"({str(error).splitlines()[0][:200]})") from None
    return IndexType(name, name)


def _check_divisible(name: str, dims: int, by: int) -> None:
    if dims % by:
        raise ValueError(f"index {name!r}: its PQ needs dims divisible by {by}, got {dims}")


def default_lists(count: int) -> int:
    return max(1, min(round(4 * math.sqrt(count)), count // MIN_POINTS_PER_LIST))


def build_faiss_index(vectors: np.ndarray, index_type: IndexType) -> faiss.Index:
    """A FAISS index of ``vectors`` (trained on a sample first where the type needs it)."""
    index = faiss.index_factory(int(vectors.shape[1]), index_type.factory, faiss.METRIC_INNER_PRODUCT)
    set_search_parameters(index, index_type.build)
    if not index.is_trained:
        index.train(training_sample(vectors, index))
    for start in range(0, len(vectors), ADD_SLICE):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_SLICE], dtype=np.float32))
    set_search_parameters(index, index_type.search)
    return index


def training_sample(vectors: np.ndarray, index: faiss.Index) -> np.ndarray:
    lists = getattr(faiss.try_extract_index_ivf(index), "nlist", 1) if _is_ivf(index) else 1
    size = min(len(vectors), max(MAX_TRAINING_POINTS_PER_LIST * lists, 10_000))
    if size == len(vectors):
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(TRAINING_SEED).choice(len(vectors), size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def _is_ivf(index: faiss.Index) -> bool:
    try:
        return faiss.try_extract_index_ivf(index) is not None
    except (RuntimeError, AttributeError):
        return False


def set_search_parameters(index: faiss.Index, parameters: dict[str, int]) -> None:
    """Apply ``{"nprobe": 32}`` / ``{"efSearch": 256}`` to an index of the matching type."""
    space = faiss.ParameterSpace()
    for name, value in parameters.items():
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            raise ValueError(f"search parameter {name}={value} does not apply to this index") from None
