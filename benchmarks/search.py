"""Approximate search against exact: queries/s and recall@10 of IVF and HNSW, as ratios to flat.

Index types (``lamra.index_types``): IVF over float vectors, IVF over 4-bit fast-scan PQ codes with
exact re-ranking (``ivfpqfs``), HNSW over float vectors, and HNSW over the first 64 principal
components with exact re-ranking (``hnsw-pca``).

Two sets, each searched by every index type in this one process:

- ``random``: ``--count`` (default 1M) random unit vectors of 576 dims (the compact LamRA's width),
  Gaussian then L2-normalised, and ``--queries`` more as queries. No structure at all: the hardest
  case for an approximate index (every point's neighbours are barely nearer than the rest).
- ``pocketbeir``: the shipped LamRA-Ret's vectors of the PocketBEIR global pool (18,237 candidates,
  from the index ``scripts/evaluate_pocketbeir.py`` caches under runs/eval-index); 500 of them, held
  out of the index, are the queries. Skipped when that index is not there.

- ``spectrum``: ``--count`` vectors drawn from a Gaussian with the ``pocketbeir`` set's mean and
  covariance (its principal axes and their variances), then L2-normalised; queries drawn the same
  way. Real embeddings use a few dozen directions, not all 576 (the participation ratio, printed
  for each set, says how many); this set has that shape at the size of the 1M target, where no real
  pool of that size exists here. Skipped with ``pocketbeir``.

Recall@10: the share of flat search's top 10 that the index returns in its top 10. Queries/s: all
queries searched in one batch (FAISS spreads them over the cores), median of ``--repeats``.

    .venv/bin/python benchmarks/search.py [--count 1000000] [--queries 1000] [--repeats 3]
        [--sets pocketbeir,spectrum,random]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from lamra.index import VectorIndex, l2_normalise, live_version
from lamra.light_checkpoint import role_digest
from lamra.model import SHIPPED_DIR

DIMS = 576
POCKETBEIR_INDEX = Path("runs/eval-index")
SETS = ("pocketbeir", "spectrum", "random")
FROM_REAL_INDEX = {"pocketbeir", "spectrum"}  # the sets built from the shipped model's cached index
SWEEPS = {  # index type (lamra.index_types) -> the search settings tried, in order (each on top of the last)
    "ivf": [{"nprobe": n} for n in (8, 16, 32, 64, 128)],
    # k_factor_rf 32 is the type's default; the last row shows what fewer exact re-rankings cost
    "ivfpqfs": [{"nprobe": n} for n in (64, 128, 256, 384, 512, 1024)] + [{"nprobe": 512, "k_factor_rf": 8}],
    "hnsw": [{"efSearch": n} for n in (32, 64, 128, 256, 512)],
    "hnsw-pca": [{"efSearch": n} for n in (80, 128, 256, 512)],  # it asks HNSW for k * k_factor_rf = 80 anyway
}


def random_set(count: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.empty((count, DIMS), np.float32)
    for start in range(0, count, 100_000):  # in slices: the float64 draw of 1M x 576 would be 4.6 GB
        end = min(start + 100_000, count)
        base[start:end] = l2_normalise(rng.standard_normal((end - start, DIMS), dtype=np.float32))
    return base, l2_normalise(rng.standard_normal((queries, DIMS), dtype=np.float32))


def spectrum_set(real: np.ndarray, count: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    mean = real.mean(axis=0)
    _, singular, axes = np.linalg.svd(real - mean, full_matrices=False)
    scales = (singular / np.sqrt(len(real) - 1)).astype(np.float32)  # std along each principal axis
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        return l2_normalise(mean + (rng.standard_normal((n, len(scales)), dtype=np.float32) * scales) @ axes)

    base = np.empty((count, real.shape[1]), np.float32)
    for start in range(0, count, 100_000):
        end = min(start + 100_000, count)
        base[start:end] = draw(end - start)
    return base, draw(queries)


def participation_ratio(vectors: np.ndarray, sample: int = 20_000) -> float:
    """(sum of variances)^2 / sum of squared variances: how many directions the set really uses."""
    rows = vectors[:sample] - vectors[:sample].mean(axis=0)
    variances = np.linalg.svd(rows, compute_uv=False) ** 2
    return float(variances.sum() ** 2 / (variances**2).sum())


def pocketbeir_set(held_out: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    # the shipped model's index (the cache holds other models' too), named as the eval script names it
    directory = POCKETBEIR_INDEX / f"LamRA-Ret_{role_digest(SHIPPED_DIR)}" / "mbeir_union_test_cand_pool"
    if live_version(directory) is None:
        return None
    vectors = np.asarray(VectorIndex.load(directory).vectors, np.float32)
    rows = np.random.default_rng(seed).permutation(len(vectors))
    return vectors[rows[held_out:]], vectors[rows[:held_out]]


def timed_search(index: VectorIndex, queries: np.ndarray, repeats: int) -> tuple[float, list[list[str]]]:
    times, ids = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        _, ids = index.search(queries, 10)
        times.append(time.perf_counter() - start)
    return len(queries) / statistics.median(times), ids


def recall_at_10(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))


def print_row(row: list[str]) -> None:
    print("| " + " | ".join(row) + " |", flush=True)  # as measured: a 1M run takes many minutes


def run_set(name: str, base: np.ndarray, queries: np.ndarray, repeats: int) -> None:
    name = f"{name} (PR {participation_ratio(base):.0f})"
    ids = [str(i) for i in range(len(base))]
    flat = VectorIndex.from_vectors(base, ids, assume_normalised=True)
    flat_qps, truth = timed_search(flat, queries, repeats)
    print_row([name, "flat", "", "0", f"{flat_qps:,.0f}", "1.0x", "1.000"])
    del flat
    for kind, settings in SWEEPS.items():
        start = time.perf_counter()
        index = VectorIndex.from_vectors(base, ids, index_type=kind, assume_normalised=True)
        build = time.perf_counter() - start
        factory = index.manifest["factory"]
        for setting in settings:
            index.set_search(**setting)
            qps, found = timed_search(index, queries, repeats)
            shown = ", ".join(f"{key}={value}" for key, value in setting.items())
            print_row([name, factory, shown, f"{build:.0f}", f"{qps:,.0f}",
                       f"{qps / flat_qps:.1f}x", f"{recall_at_10(found, truth):.3f}"])
        del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sets", default=",".join(SETS),
                        help="comma-separated: pocketbeir, spectrum (needs pocketbeir's index), random")
    args = parser.parse_args()
    sets = set(args.sets.split(","))
    if sets - set(SETS):
        parser.error(f"--sets: unknown set(s) {sorted(sets - set(SETS))}")

    print("| set (PR: participation ratio) | index | search parameter | build s | queries/s | vs flat | recall@10 |")
    print("|---|---|---|---:|---:|---:|---:|", flush=True)
    real = pocketbeir_set() if sets & FROM_REAL_INDEX else None
    if real is not None and "pocketbeir" in sets:
        run_set(f"pocketbeir {len(real[0]):,}", *real, args.repeats)
    if real is not None and "spectrum" in sets:
        run_set(f"spectrum {args.count:,}", *spectrum_set(real[0], args.count, args.queries), args.repeats)
    if "random" in sets:
        run_set(f"random {args.count:,}", *random_set(args.count, args.queries), args.repeats)
    if real is None and sets & FROM_REAL_INDEX:
        print(f"\n(pocketbeir and spectrum sets skipped: no LamRA-Ret global-pool index under {POCKETBEIR_INDEX})")


if __name__ == "__main__":
    main()
