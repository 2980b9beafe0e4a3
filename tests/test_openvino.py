"""``backend="openvino"``: the compact model's trunk and decoder in OpenVINO compute what torch computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lamra import LamRA
from lamra.backbones.openvino_engine import DECODER_FILE, OpenVINOEngine, use_openvino
from lamra.demo import DEMO_DIR, load_collection, run_demo
from lamra.prompts import embedding_messages


@pytest.fixture(scope="module")
def items():
    """Texts, images and text+image pairs of different lengths, so batches are left-padded."""
    records = load_collection()[:6]
    pictures = [Image.open(DEMO_DIR / r["img_path"]) for r in records]
    texts = [r["label"] if i % 2 else f"a picture of {r['label']}, drawn as an emoji" for i, r in enumerate(records)]
    return texts + pictures + list(zip(texts, pictures))


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory):
    """One IR folder for the tests that convert the session's compact backbone (the same weights)."""
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(scope="module")
def torch_fp32():
    return LamRA.from_pretrained(precision="fp32")


def test_fp32_equals_torch(torch_fp32, items):
    engine_model = LamRA.from_pretrained(precision="fp32", backend="openvino")
    assert engine_model.backbone.hf_model.engine.precision == "fp32"
    expected = torch_fp32.encode(items, batch_size=8)
    got = engine_model.encode(items, batch_size=8)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4
    reloaded = LamRA.from_pretrained(precision="fp32", backend="openvino")  # as the next process would
    assert not reloaded.backbone.hf_model.engine.converted  # the same weights: the saved graphs are read


def test_bf16_keeps_the_demo_answers(torch_fp32, items):
    engine_model = LamRA.from_pretrained(precision="bf16", backend="openvino")
    expected, got = torch_fp32.encode(items), engine_model.encode(items)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.99
    answers = run_demo(engine_model, top_k=1, echo=lambda *_: None)
    assert [hits[0][0] for hits in answers.values()] == ["pizza", "cat face"]


def test_the_feature_cache_keeps_engine_features_apart(torch_fp32):
    from lamra.backbones.compact import VisionFeatureCache

    engine_model = LamRA.from_pretrained(precision="fp32", backend="openvino")
    assert VisionFeatureCache.tower_precision(engine_model.backbone.hf_model) == "openvino-fp32"
    assert VisionFeatureCache.tower_precision(torch_fp32.backbone.hf_model) == "float32"


def test_the_converted_graphs_are_reused_and_a_damaged_cache_is_rebuilt(compact_backbone, engine_cache):
    model = compact_backbone.hf_model
    first = OpenVINOEngine(model, "fp32", cache_dir=engine_cache)
    assert (first.folder / DECODER_FILE).is_file()
    again = OpenVINOEngine(model, "bf16", cache_dir=engine_cache)
    assert not again.converted and again.folder == first.folder
    (first.folder / DECODER_FILE).write_text("<not a graph")
    rebuilt = OpenVINOEngine(model, "fp32", cache_dir=engine_cache)
    assert rebuilt.converted
    pixels = torch.zeros(2, 3, 224, 224)
    with torch.no_grad():
        expected = model.vision_tower.extract_features(pixels)
    assert torch.allclose(rebuilt.vision_maps(pixels), expected, atol=1e-4)


def test_training_runs_in_torch(compact_backbone, images, engine_cache):
    """With the engine attached, a forward with gradients on still runs (and trains) the torch model."""
    from lamra.backbones.compact import CompactBackbone

    backbone = CompactBackbone(compact_backbone.hf_model, compact_backbone.tokenizer)
    projector = backbone.hf_model.multi_modal_projector
    trainable = [p.requires_grad for p in projector.parameters()]
    try:
        use_openvino(backbone, "fp32", cache_dir=engine_cache)
        inputs = backbone.build_inputs([embedding_messages([images[0], "a cheesy slice of Italian food"])])
        projector.requires_grad_(True)
        hidden = backbone.hf_model.last_hidden_state(**inputs)
        assert hidden.grad_fn is not None
        with torch.no_grad():
            through_engine = backbone.hf_model.last_hidden_state(**inputs)
        assert (through_engine - hidden.detach()).abs().max() < 1e-3, (through_engine - hidden.detach()).abs().max()
    finally:
        backbone.hf_model.engine = None  # the session fixture is shared
        for parameter, flag in zip(projector.parameters(), trainable):
            parameter.requires_grad_(flag)


def test_wrong_uses_are_refused(tiny_qwen_dirs, compact_backbone):
    from lamra.model import load_backbone

    with pytest.raises(ValueError, match="backend must be one of"):
        LamRA.from_pretrained(backend="onnx")
    with pytest.raises(ValueError, match="compact model"):
        use_openvino(load_backbone(str(tiny_qwen_dirs["qwen2_vl"])), "fp32")
    with pytest.raises(ValueError, match="float32 weights"):
        OpenVINOEngine(torch.nn.Linear(2, 2).to(torch.bfloat16), "bf16")
    with pytest.raises(ValueError, match="precision must be"):
        OpenVINOEngine(compact_backbone.hf_model, "fp16")


def test_only_the_most_recently_used_graph_folders_are_kept(tmp_path):
    import os

    from lamra.backbones.openvino_engine import prune_folders

    for age in range(5):
        folder = tmp_path / f"model{age}"
        folder.mkdir()
        os.utime(folder, (1_000_000 - age, 1_000_000 - age))  # model0 used last
    prune_folders(tmp_path, keep=3)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model0", "model1", "model2"]
