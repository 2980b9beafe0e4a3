"""Compare light checkpoints' LamRA-Ret on a seeded val sample of PocketBEIR (local pools, R@5):
a quick check before a full-test evaluation, e.g. of a new training run against the shipped model.

    QPT=200 .venv/bin/python scripts/compare_retrievers.py src/lamra/weights/compact runs/RUN/final

POOLS=local,global adds the global pool (every candidate of every task, one line per pool).

Pool indexes are cached under runs/eval-index keyed by each checkpoint's retrieval digest (shared
with scripts/evaluate_pocketbeir.py), so a checkpoint's pools are encoded once.
"""

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lamra import LamRA
from lamra.assets import lamra_home
from lamra.evaluate.runner import evaluate_mbeir
from lamra.light_checkpoint import role_digest


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit(__doc__)
    per_task = int(os.environ.get("QPT", "200"))
    pools = tuple(os.environ.get("POOLS", "local").split(","))
    for path in paths:
        start = time.time()
        model = LamRA.from_pretrained(path)
        model.backbone.persist_features()
        model.name = f"LamRA-Ret@{role_digest(path)}"  # the cache key evaluate_pocketbeir.py uses
        report = evaluate_mbeir(model, lamra_home() / "pocketbeir", split="val", pools=pools,
                                index_dir="runs/eval-index", queries_per_task=per_task, show_progress=False)
        model.backbone.feature_cache.flush()
        seconds = time.time() - start
        for pool in pools:
            cells = {r.task.dataset: round(100 * r.metrics["R@5"], 1) for r in report.results if r.pool == pool}
            average = sum(cells.values()) / len(cells)
            print(f"{path} ({model.name}) {pool}: {cells} avg {average:.2f} ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
