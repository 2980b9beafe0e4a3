"""LamRA-Ret + LamRA-Rank on PocketBEIR: fusion weights per task chosen on val, then the full test split.

    .venv/bin/python scripts/evaluate_rerank.py all [--reranker DIR]   # val, test, then the page
    .venv/bin/python scripts/evaluate_rerank.py val|test|page [--reranker DIR]
    .venv/bin/python scripts/evaluate_rerank.py all --retriever DIR            # a joint model: both jobs

Retrieval is the shipped LamRA-Ret (its pool indexes are reused from runs/eval-index, which
scripts/evaluate_pocketbeir.py fills), or ``--retriever``: another package, whose own reranker is
measured unless ``--reranker`` names one (a joint model's reranker is its retrieval model).
Reranking is the shipped LamRA-Rank, or ``--reranker``: a rank run's ``final/`` or a package, to
measure it before shipping (its page goes beside its kept work,
runs/rerank-eval/rank-<digest>-ret-<digest>/rerank.md; results/rerank.md is the shipped models').
Two rerankers, as in the paper's Table 8:

- pointwise over the top 10: P(Yes) of each (query, candidate);
- listwise over the top 5 in one window: the probability of each candidate's number;
- with ``--sliding``, listwise over the top 10 too, in sliding windows of 5 (stride 2; RankGPT's
  method, ``lamra.reranker``): four prompts a query, each candidate scored by its final place.

Fusion is the official ``retrieval + w * rerank``. Each task's w is chosen on val from the grid
below (pointwise on the task's headline R@5; listwise on R@1, since reordering the top 5 cannot move
R@5), over all val queries (1,763; ``--val-queries N`` takes a seeded sample of N per task instead);
the test split then runs once with those weights: all 3,980 queries, local pools. Work is kept per
(split, task) under runs/rerank-eval/rank-<reranker digest>-ret-<retriever digest>/, so a rerun
computes only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lamra.assets import lamra_home
from lamra.light_checkpoint import role_digest
from lamra.evaluate.fusion import DEFAULT_WEIGHT_GRID, RerankMethod, model_reranker, sweep_rerank_weights
from lamra.evaluate.report import load_results, write_report
from lamra.evaluate.runner import evaluate_mbeir
from lamra.evaluate.tasks import list_tasks
from lamra.evaluate.tables import column_title, markdown_table, results_page, task_columns, write_markdown
from lamra.data.mbeir import MBEIRDataset

COMMAND = ".venv/bin/python scripts/evaluate_rerank.py all"
RETRIEVER = "src/lamra/weights/compact"  # the shipped package
INDEX_DIR = Path("runs/eval-index")
OUT = Path("runs/rerank-eval")
PAGE = Path("results/rerank.md")  # the shipped reranker's page; a candidate's goes beside its kept work
RETRIEVAL = "LamRA-Ret"
POINTWISE = "+ pointwise rerank (top 10)"
LISTWISE = "+ listwise rerank (top 5)"
SLIDING = "+ listwise rerank (top 10, sliding windows of 5)"
SWEEP_METRIC = {POINTWISE: None, LISTWISE: "R@1", SLIDING: None}  # None: the task's headline metric


def data_root() -> Path:
    return lamra_home() / "pocketbeir"


@dataclass(frozen=True)
class Models:
    """What is measured: a LamRA-Ret package and a reranker (None: the package's own, which for a
    joint model is the retrieval model itself)."""

    retriever: str = RETRIEVER
    reranker: str | None = None

    @property
    def shipped(self) -> bool:
        return self.retriever == RETRIEVER and self.reranker is None


def load_model(models: Models):
    from lamra import LamRA

    model = LamRA.from_pretrained(models.retriever, reranker=models.reranker)
    if model.reranker is None:
        raise SystemExit(f"{models.retriever} has no reranker: give --reranker DIR")
    for backbone in {id(b): b for b in (model.backbone, model.reranker.backbone)}.values():
        if hasattr(backbone, "persist_features"):
            backbone.persist_features()
    model.name = f"{RETRIEVAL}@{role_digest(models.retriever)}"  # the key of its cached pool indexes
    return model


def rerankers(model, weights: dict[str, dict[str, float]] | None = None, sliding: bool = False) -> list[RerankMethod]:
    weights = weights or {}
    root = data_root()
    listwise = model_reranker(model, root, mode="listwise", window=5)
    methods = [RerankMethod(POINTWISE, model_reranker(model, root, mode="pointwise"), 10, weights.get(POINTWISE, {})),
               RerankMethod(LISTWISE, listwise, 5, weights.get(LISTWISE, {}))]
    if sliding:
        methods.append(RerankMethod(SLIDING, listwise, 10, weights.get(SLIDING, {})))
    return methods


def out_dir(models: Models) -> Path:
    """Work of one (reranker, retriever) pair: a new LamRA-Ret changes the candidates reranked."""
    return OUT / f"rank-{role_digest(models.reranker or models.retriever, 'rank')}-ret-{role_digest(models.retriever)}"


def evaluate_task(model, task, split: str, methods: list[RerankMethod], **options):
    return evaluate_mbeir(model, data_root(), method=RETRIEVAL, split=split, pools=("local",), tasks=[task.key],
                          rerankers=methods, index_dir=INDEX_DIR, show_progress=True, **options)


def val_dir(models: Models, val_queries: int | None) -> Path:
    return out_dir(models) / ("val" if val_queries is None else f"val-{val_queries}")


def test_dir(models: Models, val_queries: int | None) -> Path:
    """Test results depend on the weights val chose, so they are kept per val scope too."""
    return out_dir(models) / ("test" if val_queries is None else f"test-val-{val_queries}")


def run_val(models: Models, model=None, sliding: bool = False, val_queries: int | None = None):
    """Per task: retrieval + the rerankers on val (all of it, or a seeded sample), and the weight sweep
    -> val/<task>.json."""
    target = val_dir(models, val_queries)
    for task in list_tasks(MBEIRDataset(data_root()), "val"):
        path = target / f"{task.key}.json"
        if path.is_file():
            continue
        model = model or load_model(models)
        start = time.perf_counter()
        report = evaluate_task(model, task, "val", rerankers(model, sliding=sliding), queries_per_task=val_queries)
        record = {"queries": report.results[0].metrics["queries"],
                  "retrieval": report.result(RETRIEVAL, "local", task.key).metrics, "sweeps": {}}
        for name in (r.name for r in rerankers(model, sliding=sliding)):
            metric = SWEEP_METRIC[name]
            sweep = sweep_rerank_weights(report, name, metric=metric)
            record["sweeps"][name] = {"metric": metric or "headline", "best": sweep.best[task.key],
                                      "table": {str(w): v for w, v in sweep.table[task.key].items()}}
        target.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"val {task.key}: {time.perf_counter() - start:.0f} s, weights "
              f"{ {n: s['best'] for n, s in record['sweeps'].items()} }")
    return model


def val_weights(models: Models, val_queries: int | None) -> dict[str, dict[str, float]]:
    weights: dict[str, dict[str, float]] = {name: {} for name in SWEEP_METRIC}
    for path in sorted(val_dir(models, val_queries).glob("*.json")):
        for name, sweep in json.loads(path.read_text())["sweeps"].items():
            weights[name][path.stem] = sweep["best"]
    return weights


def run_test(models: Models, model=None, sliding: bool = False, val_queries: int | None = None):
    """Per task: the full test queries with the val-chosen weights -> test/<task>/results.json."""
    weights = val_weights(models, val_queries)
    for task in list_tasks(MBEIRDataset(data_root()), "test"):
        target = test_dir(models, val_queries) / task.key
        if (target / "results.json").is_file():
            continue
        needed = [POINTWISE, LISTWISE] + ([SLIDING] if sliding else [])
        if any(task.key not in weights[name] for name in needed):
            raise SystemExit(f"no val weights for {task.key} (of {needed}): run `val` first, with the same flags")
        model = model or load_model(models)
        start = time.perf_counter()
        write_report(evaluate_task(model, task, "test", rerankers(model, weights, sliding)), target,
                     command=command(models, val_queries, sliding))
        print(f"test {task.key}: {time.perf_counter() - start:.0f} s -> {target}")
    return model


def page_path(models: Models) -> Path:
    """results/rerank.md describes the shipped models only: measuring a candidate (``--reranker``,
    ``--retriever``) must not overwrite it, so a candidate's page is written beside its kept work."""
    return PAGE if models.shipped else out_dir(models) / "rerank.md"


def write_page(models: Models, val_queries: int | None = None) -> None:
    base = test_dir(models, val_queries)
    results = [r for path in sorted(base.glob("*/results.json")) for r in load_results(path)["results"]]
    if not results:
        raise SystemExit(f"no test results under {base}: run `test` first (with the same --val-queries)")
    source = (f"the shipped package's LamRA-Ret and LamRA-Rank (`{RETRIEVER}`)" if models.shipped else
              f"LamRA-Ret `{models.retriever}`, reranker `{models.reranker or 'its own'}`")
    notes = (f"Full PocketBEIR test split (all 3,980 queries), local pools; compact LMM, bf16 autocast, 2 CPU "
             f"cores. Models: {source}. Fusion `retrieval + w * rerank`, w per task chosen on val "
             f"({val_scope(val_queries)}) from the grid "
             f"{list(DEFAULT_WEIGHT_GRID)}: pointwise on R@5, listwise on R@1 (reordering the top 5 cannot "
             "move R@5). w = 0 is retrieval alone; a tie on val goes to the smallest w. The LamRA-Ret row is "
             "this run's own retrieval: under bf16 autocast, a machine's CPU and its batches move a task's "
             "R@5 by a few queries from `results/pocketbeir.md`'s.")
    methods = [m for m in (RETRIEVAL, POINTWISE, LISTWISE, SLIDING) if any(r["method"] == m for r in results)]
    page = results_page(results, title="LamRA-Ret + LamRA-Rank (PocketBEIR full test split)", pools=("local",),
                        methods=methods, speed_methods=methods, notes=notes)
    path = page_path(models)
    write_markdown(path, command(models, val_queries, SLIDING in methods),
                   page + "\n" + val_tables(val_dir(models, val_queries), results))
    print(f"wrote {path}")


def command(models: Models, val_queries: int | None, sliding: bool) -> str:
    """The command that regenerates this work, flags included (the page names it)."""
    flags = ([f"--val-queries {val_queries}"] if val_queries is not None else []) + (
        [f"--retriever {models.retriever}"] if models.retriever != RETRIEVER else []) + (
        [f"--reranker {models.reranker}"] if models.reranker else []) + (["--sliding"] if sliding else [])
    return " ".join([COMMAND, *flags])


def val_scope(val_queries: int | None) -> str:
    if val_queries is None:
        return "all val queries"
    return f"{val_queries} seeded val queries per task; all of the smaller ones"


def val_tables(folder: Path, results: list[dict]) -> str:
    """The weight sweep on val: per reranker, one row per w, one column per task."""
    columns = task_columns(r for r in results if r["method"] == RETRIEVAL)
    records = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    parts = ["## Choosing w on val\n"]
    for name in [n for n in SWEEP_METRIC if any(n in r.get("sweeps", {}) for r in records.values())]:
        header = ["w"] + [column_title(c) for c in columns]
        rows = []
        for w in DEFAULT_WEIGHT_GRID:
            cells = []
            for column in columns:
                sweep = records.get(column["task"], {}).get("sweeps", {}).get(name)
                value = sweep and sweep["table"].get(str(w))
                mark = "**" if sweep and sweep["best"] == w else ""
                cells.append(f"{mark}{100 * value:.1f}{mark}" if value is not None else "-")
            rows.append([str(w)] + cells)
        metric = SWEEP_METRIC[name] or "R@5"
        parts.append(f"{name}: val {metric} by w; the row w = 0 is LamRA-Ret alone (bold: chosen; queries per task: "
                     f"{', '.join(str(records[c['task']]['queries']) for c in columns if c['task'] in records)})\n")
        parts.append(markdown_table(header, rows))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["all", "val", "test", "page"])
    parser.add_argument("--reranker", help="a rank run's final/ (default: the shipped package's reranker)")
    parser.add_argument("--retriever", default=RETRIEVER, help="a LamRA package or stage-2 final/ (default: the "
                        "shipped one); with no --reranker, its own reranker")
    parser.add_argument("--sliding", action="store_true", help="also listwise over the top 10 in sliding windows")
    parser.add_argument("--val-queries", type=int, help="choose w on a seeded sample of N val queries per task "
                        "(default: all val queries)")
    args = parser.parse_args()
    models = Models(args.retriever, args.reranker)
    model = None
    if args.step in ("all", "val"):
        model = run_val(models, model, args.sliding, args.val_queries)
    if args.step in ("all", "test"):
        model = run_test(models, model, args.sliding, args.val_queries)
    if args.step in ("all", "page"):
        write_page(models, args.val_queries)


if __name__ == "__main__":
    main()
