"""Encoding a pool on Ray against the one-process path: items/s with 1 and 2 workers, same model.

The pool: the first ``--items`` candidates of the PocketBEIR global pool (text, image and image+text).
Each row builds a fresh index of it (nothing reused); the Ray rows start and stop their local Ray
instance inside the timing, as a user's run would. On a 2-core machine two workers share the cores
that one process already uses, so expect no gain here; the rows show that it runs and what Ray's
overhead is at one worker. On a cluster each worker brings its own cores.

    .venv/bin/python benchmarks/distributed.py [--items 512]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from lamra.assets import lamra_home
from lamra.cli import load_model
from lamra.index_pool import index_pool
from lamra.index_ray import ray_index_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=512)
    args = parser.parse_args()

    root = lamra_home() / "pocketbeir"
    work = Path(tempfile.mkdtemp())
    pool = work / "pool.jsonl"
    with open(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl") as source:
        pool.write_text("".join(itertools.islice(source, args.items)))
    load = functools.partial(load_model, None, "auto")
    cores = torch.get_num_threads()
    rows = []

    start = time.perf_counter()
    index_pool(load(), pool, work / "one", model_name="compact", image_root=root, show_progress=False)
    base = time.perf_counter() - start
    rows.append(("one process", f"{cores} threads", base))
    for workers in (1, 2):
        threads = max(1, cores // workers)
        start = time.perf_counter()
        ray_index_pool(load, pool, work / f"ray{workers}", model_name="compact", image_root=root, workers=workers,
                       threads_per_worker=threads, show_progress=False)
        rows.append((f"Ray, {workers} worker(s)", f"{threads} thread(s) each", time.perf_counter() - start))
    shutil.rmtree(work)

    print(f"{args.items} PocketBEIR candidates, shipped compact model, {cores} cores\n")
    print("| path | threads | seconds | items/s | vs one process |")
    print("|---|---|---:|---:|---:|")
    for name, threads, seconds in rows:
        print(f"| {name} | {threads} | {seconds:.1f} | {args.items / seconds:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
