"""Markdown tables laid out like the paper's: Tables 5/6 (tasks as columns, methods as rows, one
headline number per cell) and Table 8 (R@1 and seconds per query of each reranking method).

Tables are built from the JSON results (``write_report``'s ``results`` entries), so rows from several
runs (the base model, MiniLM, LamRA-Ret, ...) can be merged into one table. Every results file starts
with the command that generated it (as pyserini's reproduction pages do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lamra.atomic_io import atomic_write_text
from lamra.data.mbeir import DATASET_IDS

# the paper's column notation: q = query, c = candidate, t = text, i = image
TASK_NOTATION = {
    0: "qt->ci",
    1: "qt->ct",
    2: "qt->(ci,ct)",
    3: "qi->ct",
    4: "qi->ci",
    6: "(qi,qt)->ct",
    7: "(qi,qt)->ci",
    8: "(qi,qt)->(ci,ct)",
}
# UniIR's column order for M-BEIR (its retriever's dataset_order); other datasets follow by name
MBEIR_COLUMN_ORDER = [
    "visualnews_task0", "mscoco_task0", "fashion200k_task0", "webqa_task1", "edis_task2", "webqa_task2",
    "visualnews_task3", "mscoco_task3", "fashion200k_task3", "nights_task4", "oven_task6", "infoseek_task6",
    "fashioniq_task7", "cirr_task7", "oven_task8", "infoseek_task8",
]
DISPLAY_NAMES = {name.lower(): name for name in DATASET_IDS}  # "mscoco" -> "MSCOCO"
MISSING = "-"

Result = Mapping[str, Any]  # one entry of results.json's "results"


def task_columns(results: Iterable[Result]) -> list[Result]:
    """One representative result per task, in M-BEIR's order (task id, then dataset)."""
    columns: dict[str, Result] = {}
    for result in results:
        columns.setdefault(result["task"], result)
    def order(result: Result):
        known = result["task"] in MBEIR_COLUMN_ORDER
        return (result["task_id"], 0 if known else 1,
                MBEIR_COLUMN_ORDER.index(result["task"]) if known else 0, result["dataset"])

    return sorted(columns.values(), key=order)


def column_title(result: Result) -> str:
    """E.g. "qt->ci MSCOCO": the paper's task notation, then the dataset."""
    notation = TASK_NOTATION.get(result["task_id"], f"task{result['task_id']}")
    return f"{notation} {DISPLAY_NAMES.get(result['dataset'], result['dataset'])}"


def _methods(results: Iterable[Result], methods: Sequence[str] | None) -> list[str]:
    if methods is not None:
        return list(methods)
    seen: dict[str, None] = {}
    for result in results:
        seen.setdefault(result["method"], None)
    return list(seen)


def _cell(value: float | None, scale: float) -> str:
    return MISSING if value is None else f"{value * scale:.1f}"


def _lookup(results: Iterable[Result], pool: str) -> dict[tuple[str, str], Result]:
    return {(r["method"], r["task"]): r for r in results if r["pool"] == pool}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def retrieval_table(results: Sequence[Result], pool: str, methods: Sequence[str] | None = None,
                    scale: float = 100.0) -> str:
    """Tables 5/6: each cell the task's headline metric (R@5; R@10 for fashion datasets), then "Avg",
    the mean over all task columns ("-" for a method that skipped any task)."""
    columns = task_columns(r for r in results if r["pool"] == pool)
    if not columns:
        raise ValueError(f"no results on the {pool} pool")
    cells = _lookup(results, pool)
    rows = []
    for method in _methods((r for r in results if r["pool"] == pool), methods):
        values = []
        for column in columns:
            result = cells.get((method, column["task"]))
            metrics = result and result.get("metrics")
            values.append(metrics[column["headline"]] if metrics else None)
        average = None if None in values else sum(values) / len(values)
        rows.append([method] + [_cell(v, scale) for v in values] + [_cell(average, scale)])
    return markdown_table(["Method"] + [column_title(c) for c in columns] + ["Avg"], rows)


def headline_legend(results: Sequence[Result]) -> str:
    """A line saying which metric each column shows."""
    by_metric: dict[str, list[str]] = {}
    for column in task_columns(results):
        by_metric.setdefault(column["headline"], []).append(column["dataset"])
    parts = [f"{metric} ({', '.join(sorted(set(names)))})" for metric, names in sorted(by_metric.items())]
    return "Cells: " + "; ".join(parts) + ", x100. Avg: mean over the task columns."


def rerank_speed_table(results: Sequence[Result], pool: str, methods: Sequence[str] | None = None,
                       scale: float = 100.0) -> str:
    """Table 8: R@1 per task, its average, and seconds per query spent reranking (for retrieval-only
    rows: encoding the query and searching; tasks where a reranker's weight is 0, so it did not run,
    are left out of its time). Tasks without R@1 (fashion datasets) are left out."""
    columns = [c for c in task_columns(r for r in results if r["pool"] == pool)
               if "R@1" in _metric_names(results, c["task"])]
    cells = _lookup(results, pool)
    rows = []
    for method in _methods((r for r in results if r["pool"] == pool), methods):
        values, seconds, queries = [], 0.0, 0
        for column in columns:
            result = cells.get((method, column["task"]))
            metrics = result and result.get("metrics")
            values.append(metrics.get("R@1") if metrics else None)
            if metrics and not result["seconds"].get("rerank_skipped"):  # w = 0: nothing was reranked
                timing = result["seconds"]
                per_query = timing.get("rerank_per_query", timing.get("per_query", 0.0))
                seconds += per_query * metrics["queries"]
                queries += metrics["queries"]
        present = [v for v in values if v is not None]
        average = None if None in values or not present else sum(present) / len(present)
        rows.append([method] + [_cell(v, scale) for v in values] + [_cell(average, scale),
                     f"{seconds / queries:.3f}" if queries else MISSING])
    return markdown_table(["Method"] + [column_title(c) for c in columns] + ["Avg R@1", "s/query"], rows)


def _metric_names(results: Iterable[Result], task: str) -> set[str]:
    names: set[str] = set()
    for result in results:
        if result["task"] == task and result.get("metrics"):
            names.update(result["metrics"])
    return names


def skipped_summary(results: Iterable[Result]) -> list[str]:
    """One line per (method, reason), naming the skipped tasks, e.g. why MiniLM has no image tasks."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.get("skipped"):
            grouped.setdefault((r["method"], r["skipped"]), []).append(f"{r['task']} ({r['pool']})")
    return [f"{method}: {reason}: {', '.join(sorted(cells))}" for (method, reason), cells in sorted(grouped.items())]


def write_markdown(path: str | Path, command: str, body: str) -> Path:
    """Write a results page atomically; its first line names the command that generated it."""
    if not command.strip():
        raise ValueError("a results page must name the command that generated it")
    return atomic_write_text(path, f"Generated by: `{command.strip()}`\n\n{body.rstrip()}\n")


def results_page(results: Sequence[Result], *, title: str, pools: Sequence[str] = ("local", "global"),
                 methods: Sequence[str] | None = None, speed_methods: Sequence[str] | None = None,
                 notes: str = "") -> str:
    """A page with one Table 5/6-style table per pool and, with ``speed_methods``, a Table 8 analogue."""
    parts = [f"# {title}\n"]
    for pool in pools:
        pool_results = [r for r in results if r["pool"] == pool]
        if not pool_results:
            continue
        parts.append(f"## {pool.capitalize()} pool\n")
        parts.append(retrieval_table(pool_results, pool, methods))
        parts.append(headline_legend(pool_results) + "\n")
    if speed_methods:
        pool = next(p for p in pools if any(r["pool"] == p for r in results))
        parts.append(f"## Reranking: R@1 and seconds per query ({pool} pool)\n")
        parts.append(rerank_speed_table(results, pool, speed_methods))
    skipped = skipped_summary(results)
    if skipped:
        parts.append("Skipped cells (\"-\"):\n\n" + "\n".join(f"- {line}" for line in skipped) + "\n")
    if notes:
        parts.append(notes.rstrip() + "\n")
    return "\n".join(parts)
