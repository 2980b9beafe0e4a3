"""Evaluate the compact LamRA stages and baselines on PocketBEIR and write the results pages.

    .venv/bin/python scripts/evaluate_pocketbeir.py all        # everything below, in order
    .venv/bin/python scripts/evaluate_pocketbeir.py subsets    # cut the test-lite / val-lite subsets
    .venv/bin/python scripts/evaluate_pocketbeir.py method NAME  # one row: base, stage1, ret, minilm
    .venv/bin/python scripts/evaluate_pocketbeir.py pages      # results/pocketbeir.md, results/stages.md

Full PocketBEIR pools (18k candidates) take ~40 min to encode per model on 2 CPU cores, so the pages
use concept-preserving subsets (``lamra.data.subset``): per task a seeded sample of test queries and
a local pool of whole concepts (all candidates of the positives' concepts plus sampled distractor
concepts); the global pool is the union of those local pools. Finished rows are kept: a rerun only
computes what is missing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from lamra.assets import lamra_home
from lamra.data.subset import subset_mbeir
from lamra.evaluate.runner import (
    RerankMethod,
    choose_rerank_weights,
    evaluate_mbeir,
    load_results,
    model_reranker,
    write_report,
)
from lamra.evaluate.tables import results_page, write_markdown

COMMAND = ".venv/bin/python scripts/evaluate_pocketbeir.py all"
TEST_QUERIES, VAL_QUERIES, DISTRACTOR_CONCEPTS = 50, 25, 100
OUT = Path("results/pocketbeir")
CHECKPOINTS = {
    "Base (stage 0 only)": "runs/compact-stage0/final",
    "Stage 1 only": "runs/compact-stage1/final",
    "LamRA-Ret": "src/lamra/weights/compact",  # the shipped package: retrieval + rank adapters
}
METHOD_KEYS = {"base": "Base (stage 0 only)", "stage1": "Stage 1 only", "ret": "LamRA-Ret",
               "minilm": "all-MiniLM-L6-v2"}
# Table 8 analogue: the R@1-style tasks where a top-5 rerank can change R@1, local pools only.
SPEED_TASKS = ["emojiname_task0", "wordnetpassage_task1"]
SPEED_METHODS = ["pointwise, top 5", "listwise, top 5"]


def test_root() -> Path:
    return lamra_home() / "pocketbeir-test-lite"


def val_root() -> Path:
    return lamra_home() / "pocketbeir-val-lite"


def make_subsets() -> None:
    source = lamra_home() / "pocketbeir"
    subset_mbeir(source, test_root(), "test", TEST_QUERIES, DISTRACTOR_CONCEPTS, seed=0)
    subset_mbeir(source, val_root(), "val", VAL_QUERIES, DISTRACTOR_CONCEPTS, seed=0)


def memoised(rerank):
    """Rerank scores of a (query, candidate) pair do not depend on the pool: score each pair once."""
    memo: dict[tuple[str, str], float] = {}

    def wrapped(query, candidates, retrieval_scores):
        key = repr(sorted(query.items()))
        todo = [c for c in candidates if (key, repr(sorted(c.items()))) not in memo]
        if todo:
            for candidate, score in zip(todo, rerank(query, todo, np.zeros(len(todo))), strict=True):
                memo[(key, repr(sorted(candidate.items())))] = float(score)
        return [memo[(key, repr(sorted(c.items())))] for c in candidates]

    return wrapped


def load_lamra(name: str):
    from lamra import LamRA

    model = LamRA.from_pretrained(CHECKPOINTS[name])  # the shipped package brings its reranker
    model.name = name
    return model


def run_method(key: str) -> None:
    name = METHOD_KEYS[key]
    out = OUT / name.replace(" ", "_")
    if (out / "results.json").is_file():
        print(f"{name}: done already ({out})")
        return
    start = time.perf_counter()
    rerankers = []
    if key == "minilm":
        from lamra.evaluate.baselines import MiniLMEncoder

        encoder = MiniLMEncoder()
    else:
        encoder = load_lamra(name)
        if key == "ret":
            pointwise = RerankMethod("LamRA-Ret + pointwise rerank (top 10)",
                                     memoised(model_reranker(encoder, val_root())), top_k=10)
            pointwise, sweep = choose_rerank_weights(encoder, val_root(), pointwise, split="val",
                                                     method=name, show_progress=True)
            print("fusion weights chosen on val-lite:", sweep.best)
            rerankers = [RerankMethod(pointwise.name, memoised(model_reranker(encoder, test_root())), 10,
                                      pointwise.weights)]
    report = evaluate_mbeir(encoder, test_root(), method=name, pools=("local", "global"), rerankers=rerankers,
                            show_progress=True)
    write_report(report, out, command=COMMAND)
    if key == "ret":  # timed separately, without the memo, so seconds per query are honest
        speed = [RerankMethod(SPEED_METHODS[0], model_reranker(encoder, test_root()), 5, pointwise.weights),
                 RerankMethod(SPEED_METHODS[1], model_reranker(encoder, test_root(), mode="listwise"), 5,
                              pointwise.weights)]
        report = evaluate_mbeir(encoder, test_root(), method=name, pools=("local",), tasks=SPEED_TASKS,
                                rerankers=speed, show_progress=True)
        write_report(report, OUT / "LamRA-Ret_table8", command=COMMAND)
    print(f"{name}: {time.perf_counter() - start:.0f} s -> {out}")


def write_pages() -> None:
    rows = {}
    for name in METHOD_KEYS.values():
        path = OUT / name.replace(" ", "_") / "results.json"
        if path.is_file():
            rows[name] = load_results(path)["results"]
    subset_note = (
        f"PocketBEIR test-lite: per task {TEST_QUERIES} seeded test queries; local pools of whole concepts "
        f"(the positives' concepts + {DISTRACTOR_CONCEPTS} sampled distractor concepts, all splits); the "
        "global pool is the union of those local pools. Fusion weights chosen on val-lite "
        f"({VAL_QUERIES} queries per task), never on test. Compact LMM, bf16 autocast, 2 CPU cores."
    )
    main_rows = [r for name in ("Base (stage 0 only)", "all-MiniLM-L6-v2", "LamRA-Ret") for r in rows.get(name, [])]
    main_rows = [r for r in main_rows if r["method"] in (
        "Base (stage 0 only)", "all-MiniLM-L6-v2", "LamRA-Ret", "LamRA-Ret + pointwise rerank (top 10)")]
    speed_path = OUT / "LamRA-Ret_table8" / "results.json"
    speed_rows = [r for r in load_results(speed_path)["results"] if r["method"] in SPEED_METHODS] if speed_path.is_file() else []
    page = results_page(main_rows + speed_rows, title="PocketBEIR (test-lite): retrieval and reranking",
                        pools=("local", "global"), methods=["Base (stage 0 only)", "all-MiniLM-L6-v2", "LamRA-Ret",
                                                             "LamRA-Ret + pointwise rerank (top 10)"],
                        speed_methods=SPEED_METHODS if speed_rows else None, notes=subset_note)
    write_markdown("results/pocketbeir.md", COMMAND, page)
    stage_rows = [r for name in CHECKPOINTS for r in rows.get(name, []) if r["method"] == name and r["pool"] == "local"]
    page = results_page(stage_rows, title="Compact LamRA by training stage (PocketBEIR test-lite, local pools)",
                        pools=("local",), methods=list(CHECKPOINTS), notes=subset_note)
    write_markdown("results/stages.md", COMMAND, page)
    print("wrote results/pocketbeir.md and results/stages.md")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    if argv[0] == "subsets":
        make_subsets()
    elif argv[0] == "method":
        run_method(argv[1])
    elif argv[0] == "pages":
        write_pages()
    elif argv[0] == "all":
        if not test_root().is_dir() or not val_root().is_dir():
            make_subsets()
        for key in METHOD_KEYS:
            run_method(key)
        write_pages()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
