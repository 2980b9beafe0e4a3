"""TREC run files scored by pytrec_eval give the same numbers as lamra.evaluate.metrics."""

from __future__ import annotations

import numpy as np
import pytest

from lamra.evaluate.metrics import evaluate_run, recall_at_k
from lamra.evaluate.trec import read_run, trec_eval_means, trec_order, write_run, write_trec_qrels



def random_run_and_qrels(seed: int = 0, queries: int = 40, pool: int = 30, depth: int = 20):
    rng = np.random.default_rng(seed)
    dids = [f"12:{i}" for i in range(pool)]
    run, qrels = {}, {}
    for q in range(queries):
        qid = f"12:{q}"
        scores = rng.normal(size=pool)
        scores[rng.integers(pool)] = scores.max()  # a tie at the top, settled by trec_eval's rule
        ranked = trec_order(dids, scores)[:depth]
        run[qid] = ranked
        n_positive = 1 if q % 2 else int(rng.integers(2, 5))  # half the queries have several positives
        qrels[qid] = set(rng.choice(dids, size=n_positive, replace=False).tolist())
    return run, qrels


def test_trec_eval_success_equals_our_hit_rate_and_recall_differs(tmp_path):
    run, qrels = random_run_and_qrels()
    write_run(tmp_path / "run.trec", run, "lamra-test")
    write_trec_qrels(tmp_path / "qrels.txt", qrels)
    assert read_run(tmp_path / "run.trec") == {qid: list(r) for qid, r in run.items()}

    ours = evaluate_run({qid: [d for d, _ in r] for qid, r in run.items()}, qrels, recall_ks=(1, 5, 10))
    theirs = trec_eval_means(tmp_path / "run.trec", tmp_path / "qrels.txt", ["success.1,5,10", "recall.5"])
    for k in (1, 5, 10):
        assert theirs[f"success_{k}"] == pytest.approx(ours[f"R@{k}"], abs=1e-12)

    # trec_eval's recall.5 is the fraction of positives: it is lower once queries have several
    our_fraction = np.mean([recall_at_k([d for d, _ in run[q]], qrels[q], 5) for q in qrels])
    assert theirs["recall_5"] == pytest.approx(our_fraction, abs=1e-12)
    assert theirs["recall_5"] < theirs["success_5"]


def test_trec_order_matches_trec_eval_tie_breaking(tmp_path):
    # four candidates with one score: trec_eval ranks them by did, descending
    run = {"1:0": trec_order(["1:a", "1:c", "1:b", "1:d"], [0.5, 0.5, 0.5, 0.5])}
    assert [d for d, _ in run["1:0"]] == ["1:d", "1:c", "1:b", "1:a"]
    write_run(tmp_path / "run.trec", run, "ties")
    for positive, expected_success_1 in (("1:d", 1.0), ("1:a", 0.0)):
        write_trec_qrels(tmp_path / "qrels.txt", {"1:0": {positive}})
        assert trec_eval_means(tmp_path / "run.trec", tmp_path / "qrels.txt", ["success.1"])["success_1"] == expected_success_1


def test_write_run_refuses_an_order_trec_eval_would_change(tmp_path):
    with pytest.raises(ValueError, match="out of trec_eval's order"):
        write_run(tmp_path / "r.trec", {"1:0": [("1:1", 0.2), ("1:2", 0.9)]}, "bad")
    with pytest.raises(ValueError, match="appears twice"):
        write_run(tmp_path / "r.trec", {"1:0": [("1:1", 0.9), ("1:1", 0.2)]}, "bad")
    with pytest.raises(ValueError, match="run name"):
        write_run(tmp_path / "r.trec", {}, "two words")
    assert not (tmp_path / "r.trec").exists()
