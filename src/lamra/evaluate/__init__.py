"""Evaluation with M-BEIR's conventions: metrics, the local/global runner, TREC runs, tables, baselines.

- ``metrics``: R@K as M-BEIR's hit rate, MAP@K (CIRCO), ITM accuracy, per-dataset cut-offs.
- ``runner``: ``evaluate_mbeir`` (retrieve, rerank, fuse, score), ``choose_rerank_weights`` (on val),
  ``evaluate_and_write`` (what ``lamra eval`` calls). Its parts, one role each:
  ``tasks`` (a split's tasks and how a run is scored), ``queries`` (sampling, instruction choice,
  encoding), ``task_pools`` (local/global pools indexed once), ``fusion`` (rerank top-k, fuse, the
  val weight sweep), ``report`` (results.json + TREC runs). ``lamra.index_pool`` is ``lamra index``.
- ``trec``: TREC run and qrels files, re-scored with pytrec_eval.
- ``tables``: markdown tables like the paper's Tables 5/6 and 8.
- ``baselines``: all-MiniLM-L6-v2 (text only) with the same ``encode`` interface.
"""

from lamra.evaluate.metrics import average_precision_at_k, evaluate_run, hit_at_k, itm_accuracy, recall_at_k
from lamra.evaluate.fusion import RerankMethod, sweep_rerank_weights
from lamra.evaluate.report import EvaluationReport, write_report
from lamra.evaluate.runner import choose_rerank_weights, evaluate_and_write, evaluate_mbeir
from lamra.index_pool import index_pool

__all__ = [
    "EvaluationReport", "RerankMethod", "average_precision_at_k", "choose_rerank_weights", "evaluate_and_write",
    "evaluate_mbeir", "evaluate_run", "hit_at_k", "index_pool", "itm_accuracy", "recall_at_k",
    "sweep_rerank_weights", "write_report",
]
