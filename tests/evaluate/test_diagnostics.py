"""Diagnostics and the vision-tower baseline: the numbers that show whether a model sees."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from eval_helpers import HashingEncoder, build_toy_mbeir

from lamra.evaluate.baselines import VisionTowerEncoder
from lamra.evaluate.diagnostics import (
    embedding_spread,
    generalization_gap,
    generalization_table,
    pairwise_auc,
    pairwise_cosine_stats,
    rerank_separation,
    sample_candidates,
    separation_table,
)
from lamra.evaluate.fusion import RerankMethod
from lamra.evaluate.queries import ModalityNotSupported
from lamra.evaluate.runner import evaluate_mbeir


def test_pairwise_cosine_stats_on_known_vectors():
    same = np.ones((4, 3), np.float32)
    assert pairwise_cosine_stats(same) == pytest.approx((1.0, 1.0))
    orthogonal = np.eye(3, dtype=np.float32) * 5  # norms do not matter
    assert pairwise_cosine_stats(orthogonal) == pytest.approx((0.0, 0.0))
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_cosine_stats(same[:1])


class Collapsed:
    """An encoder that sees nothing: every item gets the same vector, plus a little noise from its text."""

    def encode(self, items, instruction=None, **kwargs):
        rng = np.random.default_rng(len(items))
        return np.ones((len(items), 8), np.float32) + 0.01 * rng.standard_normal((len(items), 8))


def test_embedding_spread_flags_a_collapsed_encoder(tmp_path):
    root = build_toy_mbeir(tmp_path / "toy")
    samples = sample_candidates(root, "test", per_modality=5)
    assert set(samples) == {"image", "text"} and all(len(items) == 5 for items in samples.values())
    rows = embedding_spread(Collapsed(), root, split="test", per_modality=5)
    assert {row.modality for row in rows} == {"image", "text"}
    assert any(row.instruction for row in rows)  # the toy data has instructions for text queries
    assert all(row.mean_cosine > 0.99 for row in rows)


def test_pairwise_auc_counts_ordered_pairs_and_half_ties():
    relevant = np.array([True, False, True, False, False])
    assert pairwise_auc(np.array([0.9, 0.1, 0.8, 0.2, 0.3]), relevant) == 1.0
    assert pairwise_auc(np.array([0.1, 0.9, 0.2, 0.8, 0.7]), relevant) == 0.0
    assert pairwise_auc(np.zeros(5), relevant) == 0.5
    assert pairwise_auc(np.array([0.5, 0.4, 0.1, 0.6, 0.0]), relevant) == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="at least one positive"):
        pairwise_auc(np.ones(3), np.ones(3, bool))


def test_rerank_separation_tells_an_oracle_from_a_coin_flip(tmp_path):
    root = build_toy_mbeir(tmp_path / "toy")
    positives: dict[str, set[str]] = {}
    for qrels_file in (root / "qrels" / "val").glob("*.txt"):
        for line in qrels_file.read_text().splitlines():
            qid, _, did, *_ = line.split()
            positives.setdefault(qid, set()).add(did)

    def oracle(query, candidates, scores):
        return [float(c["did"] in positives[query["qid"]]) for c in candidates]

    def anti(query, candidates, scores):
        return [-float(c["did"] in positives[query["qid"]]) for c in candidates]

    def constant(query, candidates, scores):
        return [0.5] * len(candidates)

    methods = [RerankMethod(name, fn, top_k=5) for name, fn in [("oracle", oracle), ("anti", anti), ("coin", constant)]]
    report = evaluate_mbeir(HashingEncoder(), root, split="val", rerankers=methods, show_progress=False)
    by_method = {m.name: rerank_separation(report, m.name) for m in methods}
    counted = [row for row in by_method["oracle"] if row.queries]
    assert counted, "the toy data should leave some query with a positive and a miss in its top 5"
    assert all(row.rerank_auc == 1.0 for row in counted)
    assert all(row.rerank_auc == 0.0 for row in by_method["anti"] if row.queries)
    assert all(row.rerank_auc == 0.5 for row in by_method["coin"] if row.queries)
    for oracle_row, coin_row in zip(by_method["oracle"], by_method["coin"]):
        assert oracle_row.retrieval_auc == coin_row.retrieval_auc  # retrieval's side is the reranker's top k
        assert oracle_row.sampled >= oracle_row.queries
    table = separation_table(by_method["coin"], top_k=5)
    assert "| mean |" in table and "0.500" in table.splitlines()[-1]
    with pytest.raises(ValueError, match="no results of reranker"):
        rerank_separation(report, "missing")
    unweighted = evaluate_mbeir(HashingEncoder(), root, split="val", show_progress=False,
                                rerankers=[RerankMethod("oracle", oracle, top_k=5, default_weight=0.0)])
    with pytest.raises(ValueError, match="was not run"):  # zeros, not scores: no AUC from them
        rerank_separation(unweighted, "oracle")


@pytest.fixture(scope="module")
def tower():
    return VisionTowerEncoder()


def test_vision_tower_is_the_mean_pooled_trunk(tower, tmp_path):
    from lamra.backbones.compact_modeling import preprocess_images
    from lamra.items import load_image

    from PIL import Image

    root = build_toy_mbeir(tmp_path / "toy")
    paths = ["images/google/cat.png", "images/google/dog.png"]
    (root / "images/google").mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (64, 64), (250, 180, 40, 255)).save(root / paths[0])
    Image.new("RGB", (48, 64), (30, 60, 200)).save(root / paths[1])
    vectors = tower.encode([{"img_path": p, "txt": None} for p in paths], image_root=root)
    with torch.no_grad():
        maps = tower.tower.extract_features(preprocess_images([load_image(p, root) for p in paths]))
    expected = torch.nn.functional.normalize(maps.mean(dim=(2, 3)), dim=-1).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    with pytest.raises(ModalityNotSupported, match="item 0"):
        tower.encode([{"img_path": paths[0], "txt": "a cat"}], image_root=root)


def test_vision_tower_runs_the_image_to_image_task_only(tower, tmp_path):
    root = build_toy_mbeir(tmp_path / "toy")
    report = evaluate_mbeir(tower, root, method="tower", pools=("local",), show_progress=False)
    skipped = {r.task.key for r in report.results if r.skipped}
    assert "toyname_task0" in skipped and "toypassage_task1" in skipped  # text queries
    assert all(r.skipped for r in report.results if r.task.key.startswith("toyvariant"))  # image+text queries


def test_generalization_gap_matches_the_evaluation_on_each_split(tmp_path):
    root = build_toy_mbeir(tmp_path / "toy")
    rows = generalization_gap(HashingEncoder(), root, "test", seen_split="val", show_progress=False)
    assert [row.task for row in rows] == ["toyname_task0", "toypassage_task1", "fashioniq_task7", "toyvariant_task7"]
    for split, count_of, recall_of in (("val", "seen_queries", "seen_recall"), ("test", "new_queries", "new_recall")):
        report = evaluate_mbeir(HashingEncoder(), root, split=split, show_progress=False)
        for row, result in zip(rows, report.results):
            assert result.task.key == row.task
            assert getattr(row, count_of) == result.metrics["queries"]
            assert getattr(row, recall_of) == pytest.approx(result.metrics[row.metric])
    assert {row.metric for row in rows} == {"R@5", "R@10"}  # FashionIQ keeps its own headline


class Memoriser:
    """Knows its seen (val) queries by heart: each lands on its positive; any other query lands on a
    candidate that is not one of its positives."""

    def __init__(self, root):
        self.answer = {}
        for split in ("val", "test"):
            for file in (root / "query" / split).glob("*.jsonl"):
                for line in file.read_text().splitlines():
                    record = json.loads(line)
                    self.answer[record["qid"]] = record["pos_cand_list"][0] if split == "val" else None

    def encode(self, items, instruction=None, **kwargs):
        vectors = np.zeros((len(items), 64), np.float32)
        for row, item in enumerate(items):
            key = item.get("did") or self.answer.get(item["qid"]) or "nothing"
            vectors[row, zlib.crc32(key.encode()) % 64] = 1.0
        return vectors


def test_generalization_gap_shows_a_memorising_encoder(tmp_path):
    root = build_toy_mbeir(tmp_path / "toy")
    rows = generalization_gap(Memoriser(root), root, "test", seen_split="val", show_progress=False)
    assert all(row.seen_recall == 1.0 for row in rows)
    assert np.mean([row.new_recall for row in rows]) < 0.75
    table = generalization_table(rows, "test", seen_split="val")
    assert "| task | metric | val | test | gap |" in table
    assert "| toyname_task0 | R@5 | 100.0 (3) |" in table


def test_generalization_gap_counts_only_queries_with_a_positive_in_the_pool(tmp_path):
    root = build_toy_mbeir(tmp_path / "toy")
    val = root / "query/val/mbeir_toyname_task0_val.jsonl"
    records = [json.loads(line) for line in val.read_text().splitlines()]
    records[0]["pos_cand_list"] = ["10:999"]  # not in the local pool
    val.write_text("".join(json.dumps(record) + "\n" for record in records))
    rows = generalization_gap(HashingEncoder(), root, "test", seen_split="val", tasks=["toyname"],
                              show_progress=False)
    assert [(row.task, row.seen_queries, row.new_queries) for row in rows] == [("toyname_task0", 2, 5)]
    assert "- (0)" in generalization_table(
        generalization_gap(HashingEncoder(), root, "test", seen_split="train", tasks=["toyname"],
                           show_progress=False), "test")


def test_generalization_gap_reads_training_queries_from_the_union_file(tmp_path):
    """M-BEIR ships its training queries in one union file: the task's are those of its task id with a
    positive in its local pool."""
    root = build_toy_mbeir(tmp_path / "toy")
    union = [json.loads(line) for split in ("val",) for file in sorted((root / "query" / split).glob("*.jsonl"))
             for line in file.read_text().splitlines()]
    target = root / "query/union_train/mbeir_union_up_train.jsonl"
    target.parent.mkdir(parents=True)
    target.write_text("".join(json.dumps(record) + "\n" for record in union))
    rows = {row.task: row for row in generalization_gap(HashingEncoder(), root, "test", show_progress=False)}
    # toyvariant's and fashioniq's val queries are both task 7: each keeps only those in its own pool
    assert {task: row.seen_queries for task, row in rows.items()} == {
        "toyname_task0": 3, "toypassage_task1": 1, "fashioniq_task7": 1, "toyvariant_task7": 1}
    by_split = generalization_gap(HashingEncoder(), root, "test", seen_split="val", show_progress=False)
    assert [row.seen_recall for row in by_split] == [rows[row.task].seen_recall for row in by_split]
