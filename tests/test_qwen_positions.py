"""Rotary positions on the Qwen path: LamRA-Ret checkpoints get the positions the official code gives.

The official retrieval model (models/qwen2_vl.py in Code-kunkun/LamRA) embeds the tokens, writes the
vision tower's output into the image-pad slots, and calls the decoder with ``position_ids=None`` and no
image grid: every token, image patches included, is numbered 0, 1, 2, ... The forward below is written
that way (``lamra.backbones.qwen_reference``), on a tiny random Qwen2-VL / Qwen2.5-VL, and the
library must agree with it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lamra.backbones.qwen_reference import official_embedding
from lamra.backbones.qwen_vl import QwenVLBackbone, default_position_mode, sequential_positions
from lamra.prompts import embedding_messages
from lamra.retriever import embed_conversations


def test_sequential_positions_number_real_tokens_from_zero():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    positions = sequential_positions(mask)
    assert positions.shape == (3, 3, 5)
    assert positions[0].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 2, 2]]
    assert torch.equal(positions[0], positions[2])  # the same numbers in every M-RoPE section


def test_image_and_text_items_match_the_official_forward(tiny_qwen_dir, images):
    backbone = QwenVLBackbone.from_pretrained(tiny_qwen_dir, position_mode="sequential")
    image_text = embedding_messages(["a red square on a clear ground", images[1]])
    longer = embedding_messages(["a much longer text that makes the other item padded " * 3])
    with torch.no_grad():
        ours = embed_conversations(backbone, [image_text, longer])  # left-padded batch
        official = official_embedding(backbone, image_text)
        torch.testing.assert_close(ours[0], official, rtol=1e-5, atol=1e-5)

        backbone.set_position_mode("mrope")  # the check can fail: M-RoPE numbers image patches by row/column
        mrope = embed_conversations(backbone, [image_text])[0]
    assert not torch.allclose(mrope, official, atol=1e-4)


def test_the_default_follows_the_checkpoint():
    base = SimpleNamespace()
    assert default_position_mode("code-kunkun/LamRA-Ret", base) == "sequential"
    assert default_position_mode("/models/lamra-ret-7b", base) == "sequential"
    assert default_position_mode("/ckpt/step-400", SimpleNamespace(emb_token_ids=[151657])) == "sequential"
    # LamRA-Rank trains and is evaluated through the stock forward / generate, which apply M-RoPE
    assert default_position_mode("code-kunkun/LamRA-Rank", base) == "mrope"
    assert default_position_mode("Qwen/Qwen2-VL-7B-Instruct", base) == "mrope"


def test_a_checkpoint_without_tokenizer_files_gets_the_qwen_tokenizer(tiny_qwen_dirs, tmp_path):
    import shutil

    bare = tmp_path / "LamRA-Ret-tiny"  # weights and config only, as the official checkpoints ship
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_qwen_dirs["qwen2_vl"] / name, bare / name)
    backbone = QwenVLBackbone.from_pretrained(bare)
    assert backbone.tokenizer.convert_tokens_to_ids("<|image_pad|>") == backbone.image_token_id == 151655
    assert len(backbone.tokenizer) > 151_000
    assert backbone.position_mode == "sequential"  # named as the official checkpoint
