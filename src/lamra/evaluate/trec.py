"""TREC run and qrels files, so any run can be re-scored by trec_eval / pytrec_eval.

- Run line: ``qid Q0 did rank score run_name``, best first.
- Qrels line (trec_eval's four columns): ``qid 0 did relevance``. M-BEIR's own qrels add a fifth column
  (task id), which trec_eval does not read; ``lamra.data.mbeir.read_qrels`` reads those.

trec_eval ignores the rank column: it sorts each query by score, descending, and breaks ties by did in
*descending* string order. ``trec_order`` puts a ranked list in exactly that order, so the metrics we
compute on a list and trec_eval's on its file never disagree; ``write_run`` refuses a list in any other
order. M-BEIR's "Recall@K" is trec_eval's ``success.K`` (not ``recall.K``).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from lamra.atomic_io import atomic_write_text

# qid -> [(did, score), ...], best first
Run = Mapping[str, Sequence[tuple[str, float]]]


def trec_order(dids: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
    """Sort by score descending, ties by did descending (trec_eval's own order)."""
    if len(dids) != len(scores):
        raise ValueError(f"{len(dids)} dids for {len(scores)} scores")
    pairs = [(str(did), float(score)) for did, score in zip(dids, scores)]
    pairs.sort(key=lambda pair: pair[0], reverse=True)  # stable sorts: secondary key first
    pairs.sort(key=lambda pair: pair[1], reverse=True)
    return pairs


def _check_order(qid: str, ranked: Sequence[tuple[str, float]]) -> None:
    for rank in range(1, len(ranked)):
        (did_a, score_a), (did_b, score_b) = ranked[rank - 1], ranked[rank]
        if score_b > score_a or (score_b == score_a and did_b > did_a):
            raise ValueError(
                f"query {qid!r}: rank {rank + 1} ({did_b}, {score_b}) is out of trec_eval's order after "
                f"({did_a}, {score_a}); put the list through trec_order() first"
            )


def format_run(run: Run, run_name: str) -> str:
    if not run_name or any(ch.isspace() for ch in run_name):
        raise ValueError(f"run name {run_name!r} must be non-empty and contain no whitespace")
    lines = []
    for qid, ranked in run.items():
        _check_order(qid, ranked)
        seen = set()
        for rank, (did, score) in enumerate(ranked, start=1):
            if did in seen:
                raise ValueError(f"query {qid!r}: did {did!r} appears twice in the run")
            seen.add(did)
            # repr() is the shortest exact float: rounding would create ties trec_eval re-sorts
            lines.append(f"{qid} Q0 {did} {rank} {float(score)!r} {run_name}\n")
    return "".join(lines)


def write_run(path: str | os.PathLike, run: Run, run_name: str) -> Path:
    """Write a TREC run file atomically."""
    return atomic_write_text(path, format_run(run, run_name))


def read_run(path: str | os.PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read a TREC run file back (in file order) as ``{qid: [(did, score), ...]}``."""
    run: dict[str, list[tuple[str, float]]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{line_no}: expected 'qid Q0 did rank score run_name', got {line.strip()!r}")
            try:
                score = float(parts[4])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: score {parts[4]!r} is not a number") from None
            run.setdefault(parts[0], []).append((parts[2], score))
    return run


def write_trec_qrels(path: str | os.PathLike, qrels: Mapping[str, Collection[str]]) -> Path:
    """Write trec_eval qrels (``qid 0 did 1``) for ``{qid: {positive did, ...}}``."""
    lines = [f"{qid} 0 {did} 1\n" for qid, dids in qrels.items() for did in sorted(dids)]
    return atomic_write_text(path, "".join(lines))


def read_trec_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Read four-column (trec_eval) or five-column (M-BEIR) qrels as ``{qid: {did: relevance}}``."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (4, 5):
                raise ValueError(f"{path}:{line_no}: expected 'qid 0 did relevance [task_id]', got {line.strip()!r}")
            qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return qrels


def trec_eval_means(
    run_path: str | os.PathLike, qrels_path: str | os.PathLike, measures: Iterable[str] = ("success.1,5,10",)
) -> dict[str, float]:
    """Score a run file with pytrec_eval: mean over the run's queries, e.g. ``{"success_5": 0.4}``.

    pytrec_eval only reports queries that the run contains; write every query (an empty answer
    cannot be written) if the means are to match ours.
    """
    import pytrec_eval  # a dependency, imported here so that writing runs does not need it

    run = {qid: {did: score for did, score in ranked} for qid, ranked in read_run(run_path).items()}
    evaluator = pytrec_eval.RelevanceEvaluator(read_trec_qrels(qrels_path), set(measures))
    per_query = evaluator.evaluate(run)
    if not per_query:
        raise ValueError(f"{run_path}: no query of the run is in {qrels_path}")
    names = next(iter(per_query.values())).keys()
    return {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names}
