"""An evaluation task (a query file of a split: dataset and M-BEIR task id), the split's list of
them, and how a ranked run of one is scored (R@K as M-BEIR's hit rate, MAP@5)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lamra.data.mbeir import TASKS, MBEIRDataset
from lamra.evaluate.metrics import evaluate_run, recall_ks_for
from lamra.items import InputError

MAP_KS = (5,)


@dataclass(frozen=True)
class EvalTask:
    dataset: str  # the dataset part of the file names, e.g. "mscoco" or "emojiname"
    task_id: int

    @property
    def key(self) -> str:
        return f"{self.dataset}_task{self.task_id}"

    @property
    def query_modality(self) -> str:
        return TASKS[self.task_id][0]

    @property
    def candidate_modality(self) -> str:
        return TASKS[self.task_id][1]


def list_tasks(data: MBEIRDataset, split: str, only: Iterable[str] | None = None) -> list[EvalTask]:
    """The split's tasks, in M-BEIR's table order (task id, then dataset); ``only`` filters by task
    key ("mscoco_task0") or dataset name."""
    tasks = [EvalTask(name, task_id) for name, task_id in data.tasks(split)]
    if not tasks:
        raise InputError(f"no query files under {str(data.root / 'query' / split)!r}")
    if only is not None:
        wanted = {name.lower() for name in only}
        tasks = [t for t in tasks if t.key in wanted or t.dataset in wanted]
        if not tasks:
            raise InputError(f"none of the tasks {sorted(wanted)} is in split {split!r} of {str(data.root)!r}")
    return sorted(tasks, key=lambda t: (t.task_id, t.dataset))


def score_run(run: Mapping[str, list[tuple[str, float]]], qrels: Mapping[str, set[str]], task: EvalTask) -> dict:
    ranked = {qid: [did for did, _ in pairs] for qid, pairs in run.items()}
    return evaluate_run(ranked, qrels, recall_ks=recall_ks_for(task.dataset), map_ks=MAP_KS)
