"""Shared fixtures: tiny randomly initialised Qwen-VL checkpoints and the real compact LMM."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from PIL import Image

QWEN_IMAGE_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)


def tiny_qwen_config(model_type: str):
    """The real config classes at a tiny size (2 layers, hidden 64); the real 151,936-row vocab."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    text = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
    )  # fmt: skip
    if model_type == "qwen2_vl":
        vision = dict(depth=1, embed_dim=32, num_heads=2, hidden_size=64, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
        return Qwen2VLConfig(text_config=text, vision_config=vision, **QWEN_IMAGE_TOKENS)
    vision = dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=64,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[0])  # fmt: skip
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **QWEN_IMAGE_TOKENS)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from lamra.backbones.qwen_vl import build_qwen_tokenizer

    return build_qwen_tokenizer()


@pytest.fixture(scope="session")
def tiny_qwen_dirs(tmp_path_factory, qwen_tokenizer):
    """Tiny random Qwen2-VL and Qwen2.5-VL checkpoints saved with save_pretrained, tokenizer beside."""
    from lamra.backbones.qwen_vl import model_class_for

    paths = {}
    for model_type in ("qwen2_vl", "qwen2_5_vl"):
        torch.manual_seed(0)
        model = model_class_for(model_type)(tiny_qwen_config(model_type))
        paths[model_type] = tmp_path_factory.mktemp(model_type)
        model.save_pretrained(paths[model_type])
        qwen_tokenizer.save_pretrained(paths[model_type])
    return paths


@pytest.fixture(params=["qwen2_vl", "qwen2_5_vl"])
def tiny_qwen_dir(request, tiny_qwen_dirs):
    return tiny_qwen_dirs[request.param]


@pytest.fixture(scope="session")
def compact_backbone():
    """The real compact LMM from its packaged parts (projector freshly initialised, seed 0)."""
    from lamra.backbones.compact import CompactBackbone

    return CompactBackbone.from_parts(seed=0)


@pytest.fixture(scope="session")
def images():
    """An opaque photo-like image and a transparent RGBA one (like the emoji PNGs)."""
    import numpy as np

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (80, 60, 3), dtype=np.uint8), "RGB")
    sticker = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    sticker.paste((220, 30, 30, 255), (16, 16, 48, 48))
    return photo, sticker
