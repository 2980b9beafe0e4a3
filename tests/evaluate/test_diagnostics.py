"""Diagnostics and the vision-tower baseline: the numbers that show whether a model sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import build_toy_mbeir

from lamra.evaluate.baselines import VisionTowerEncoder
from lamra.evaluate.diagnostics import embedding_spread, pairwise_cosine_stats, sample_candidates
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
