"""lamra.evaluate.metrics against values computed by hand."""

from __future__ import annotations

import pytest

from lamra.evaluate.metrics import (
    average_precision_at_k,
    evaluate_run,
    headline_average,
    headline_metric_for,
    hit_at_k,
    itm_accuracy,
    mean_by_group,
    recall_at_k,
    recall_ks_for,
)

RANKED = ["a", "b", "c", "d", "e"]
THREE_POSITIVES = {"b", "d", "x"}  # x is never retrieved


def test_hit_rate_is_one_when_any_positive_is_in_the_top_k():
    assert hit_at_k(RANKED, THREE_POSITIVES, 1) == 0.0
    assert hit_at_k(RANKED, THREE_POSITIVES, 2) == 1.0
    assert hit_at_k(RANKED, THREE_POSITIVES, 5) == 1.0
    assert hit_at_k(RANKED, {"z"}, 5) == 0.0
    assert hit_at_k(RANKED[:2], {"e"}, 10) == 0.0  # a short list is not padded


def test_trec_recall_is_the_fraction_of_positives_found():
    assert recall_at_k(RANKED, THREE_POSITIVES, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, THREE_POSITIVES, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, {"b"}, 5) == 1.0


def test_circo_map_normalises_by_min_k_and_positives():
    # hits at ranks 2 and 4: precision 1/2 and 2/4; divided by min(5, 3) = 3
    assert average_precision_at_k(RANKED, THREE_POSITIVES, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)
    # only the hit at rank 2 counts; divided by min(2, 3) = 2
    assert average_precision_at_k(RANKED, THREE_POSITIVES, 2) == pytest.approx((1 / 2) / 2)
    # one positive at rank 3
    assert average_precision_at_k(RANKED, {"c"}, 5) == pytest.approx(1 / 3)
    # every slot a positive: perfect
    assert average_precision_at_k(RANKED, set(RANKED), 5) == pytest.approx(1.0)
    assert average_precision_at_k(RANKED, {"z"}, 5) == 0.0


def test_itm_accuracy_needs_a_strict_win():
    # item 0 wins, item 1 loses, item 2 ties (wrong)
    assert itm_accuracy([0.9, 0.2, 0.5], [0.1, 0.3, 0.5]) == pytest.approx(1 / 3)
    # several negatives: the best one must be beaten
    assert itm_accuracy([1.0, 1.0], [[0.0, 2.0], [0.5, 0.9]]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="negative scores"):
        itm_accuracy([1.0, 2.0], [0.0])


def test_evaluate_run_averages_over_judged_queries():
    run = {"q1": ["a", "b", "c"], "q2": ["c", "a", "b"]}
    qrels = {"q1": {"a"}, "q2": {"b"}, "q3": {"a"}}  # q3 not answered: counts 0
    metrics = evaluate_run(run, qrels, recall_ks=(1, 3), map_ks=(3,))
    assert metrics["R@1"] == pytest.approx(1 / 3)
    assert metrics["R@3"] == pytest.approx(2 / 3)
    assert metrics["MAP@3"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert metrics["queries"] == 3
    with pytest.raises(ValueError, match="no qrels, e.g. 'q9'"):
        evaluate_run({"q9": ["a"]}, qrels)


def test_mbeir_dataset_conventions():
    assert recall_ks_for("FashionIQ") == (10, 20, 50) and recall_ks_for("fashion200k") == (10, 20, 50)
    assert recall_ks_for("mscoco") == (1, 5, 10) and recall_ks_for("pocket_t2i") == (1, 5, 10)
    assert headline_metric_for("fashioniq") == "R@10" and headline_metric_for("cirr") == "R@5"


def test_headline_average_and_grouping():
    tasks = {
        "mscoco_task0": {"R@1": 0.2, "R@5": 0.5, "R@10": 0.7},
        "fashioniq_task7": {"R@10": 0.3, "R@20": 0.4, "R@50": 0.6},
        "cirr_task7": {"R@1": 0.1, "R@5": 0.4, "R@10": 0.5},
    }
    dataset_of = {"mscoco_task0": "mscoco", "fashioniq_task7": "fashioniq", "cirr_task7": "cirr"}
    assert headline_average(tasks, dataset_of) == pytest.approx((0.5 + 0.3 + 0.4) / 3)
    by_task = mean_by_group(tasks, {"mscoco_task0": 0, "fashioniq_task7": 7, "cirr_task7": 7})
    assert by_task[7] == {"R@10": pytest.approx(0.4)}  # only the metric both columns have
    assert by_task[0]["R@5"] == 0.5
