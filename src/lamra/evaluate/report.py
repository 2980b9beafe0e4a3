"""An evaluation's results (``TaskResult`` per method, pool and task; ``EvaluationReport``) and how
they are written down: ``results.json`` with the command and settings, TREC runs and qrels."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamra.atomic_io import atomic_write_text
from lamra.data.mbeir import MBEIRDataset
from lamra.evaluate.fusion import Retrieved
from lamra.evaluate.metrics import headline_metric_for
from lamra.evaluate.tasks import EvalTask
from lamra.evaluate.trec import write_run, write_trec_qrels


@dataclass
class TaskResult:
    """One cell row of the tables: a method on one task and pool."""

    method: str
    pool: str
    task: EvalTask
    metrics: dict[str, float] | None = None  # None when skipped
    skipped: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    rerank_weight: float | None = None
    rerank_top_k: int | None = None
    run: dict[str, list[tuple[str, float]]] = field(default_factory=dict, repr=False)  # qid -> ranked
    retrieved: dict[str, Retrieved] = field(default_factory=dict, repr=False)  # for weight sweeps

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "pool": self.pool,
            "task": self.task.key,
            "dataset": self.task.dataset,
            "task_id": self.task.task_id,
            "headline": headline_metric_for(self.task.dataset),
            "metrics": self.metrics,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "rerank_weight": self.rerank_weight,
            "rerank_top_k": self.rerank_top_k,
        }


@dataclass
class EvaluationReport:
    split: str
    data_root: str
    model_name: str
    settings: dict[str, Any]
    results: list[TaskResult]
    environment: dict[str, Any] = field(default_factory=dict)  # lamra.evaluate.environment

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "data_root": self.data_root,
            "model": self.model_name,
            "settings": self.settings,
            "environment": self.environment,
            "results": [result.to_json() for result in self.results],
        }

    def result(self, method: str, pool: str, task_key: str) -> TaskResult:
        for result in self.results:
            if (result.method, result.pool, result.task.key) == (method, pool, task_key):
                return result
        raise KeyError(f"no result for method {method!r}, pool {pool!r}, task {task_key!r}")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def write_report(report: EvaluationReport, out_dir: str | Path, *, command: str) -> Path:
    """Write ``results.json`` (every number, the command, the settings) and one TREC run per
    (method, pool, task) under ``runs/`` with trec_eval qrels under ``qrels/``; returns the JSON path."""
    out_dir = Path(out_dir)
    payload = {"command": command, **report.to_json()}
    data = MBEIRDataset(report.data_root)
    written_qrels = set()
    for result, entry in zip(report.results, payload["results"]):
        if result.skipped:
            continue
        run_name = safe_name(f"{result.method}.{result.pool}")
        run_path = out_dir / "runs" / f"{run_name}.{result.task.key}.trec"
        write_run(run_path, result.run, run_name)
        qrels_path = out_dir / "qrels" / f"{result.task.key}.{report.split}.qrels"
        if qrels_path not in written_qrels:
            write_trec_qrels(qrels_path, data.qrels(report.split, result.task.dataset, result.task.task_id))
            written_qrels.add(qrels_path)
        entry["run_file"] = str(run_path.relative_to(out_dir))
        entry["qrels_file"] = str(qrels_path.relative_to(out_dir))
    json_path = out_dir / "results.json"
    atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n")
    return json_path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` written by ``write_report`` (for tables that merge several runs)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
