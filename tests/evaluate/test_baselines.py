"""The all-MiniLM-L6-v2 baseline: same encode interface, text only, skipped where it cannot encode."""

from __future__ import annotations

import numpy as np
import pytest


from lamra.evaluate.baselines import MiniLMEncoder  # noqa: E402
from lamra.evaluate.queries import ModalityNotSupported# noqa: E402
from lamra.evaluate.runner import evaluate_mbeir
from eval_helpers import build_toy_mbeir  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_embeddings_match_the_published_model(minilm):
    vectors = minilm.encode(["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the sentence-transformers documentation's example: cosine 0.7553 for the two eating sentences
    assert float(vectors[0] @ vectors[1]) == pytest.approx(0.7553, abs=5e-4)
    assert float(vectors[0] @ vectors[2]) < 0.1


def test_batching_by_length_keeps_the_input_order(minilm):
    texts = ["short", "a much longer sentence about a cat that sat on a mat", "mid length text", {"txt": "a dict"}]
    together = minilm.encode(texts, batch_size=2)
    alone = np.concatenate([minilm.encode([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_images_are_refused_with_the_item_named(minilm):
    with pytest.raises(ModalityNotSupported, match=r"text-only model: item 1 has an image \('images/cat.png'\)"):
        minilm.encode(["fine", {"txt": "a cat", "img_path": "images/cat.png"}])
    assert minilm.supported_modalities == {"text"}


def test_runner_scores_minilm_on_text_tasks_only(minilm, tmp_path):
    root = build_toy_mbeir(tmp_path)
    report = evaluate_mbeir(minilm, root, method="MiniLM", pools=("local", "global"), show_progress=False)
    scored = {(r.pool, r.task.key): r.metrics for r in report.results if r.metrics}
    assert list(scored) == [("local", "toypassage_task1")]
    assert scored["local", "toypassage_task1"]["R@5"] > 0
    assert all(r.skipped for r in report.results if not r.metrics)
