"""Rotary positions on the Qwen path: LamRA-Ret checkpoints get the positions the official code gives.

The official retrieval model (models/qwen2_vl.py in Code-kunkun/LamRA) embeds the tokens, writes the
vision tower's output into the image-pad slots, and calls the decoder with ``position_ids=None`` and no
image grid: every token, image patches included, is numbered 0, 1, 2, ... The forward below is written
that way (``lamra.backbones.qwen_reference``), on a tiny random Qwen2-VL / Qwen2.5-VL, and the
library must agree with it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
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


def test_official_truncation_cuts_documents_whole_and_pools_the_last_kept_token(tiny_qwen_dir):
    from lamra import LamRA
    from lamra.retriever import OFFICIAL_TRUNCATION, Truncation

    model = LamRA.from_pretrained(tiny_qwen_dir, precision="fp32")
    assert model.retriever.truncation == OFFICIAL_TRUNCATION  # the Qwen path's default
    long_text = "a long passage about emoji and their many drawings " * 250  # ~2,500 tokens
    query, document = (model.encode([long_text], role=role)[0] for role in ("query", "document"))
    # a document is cut to its first 1,024 tokens (the official collator); <emb> is gone, so the
    # official pooling takes the last kept token
    backbone = model.backbone
    conversation = model.retriever.prepare([long_text], None)
    inputs = backbone.build_inputs([conversation])
    assert inputs["input_ids"].shape[1] > 1024  # a query is never cut
    cut = backbone.build_inputs([conversation], max_length=1024)
    assert cut["input_ids"].shape[1] == 1024 and backbone.emb_token_id not in cut["input_ids"][0].tolist()
    with torch.no_grad():
        expected = backbone.hidden_states(cut)[0, -1]
    np.testing.assert_allclose(document, torch.nn.functional.normalize(expected, dim=0).numpy(), atol=1e-5)
    assert not np.allclose(query, document, atol=1e-3)
    # the compact path keeps its per-text cut; a user can choose either for any model
    model.retriever.truncation = Truncation(text_tokens=16)
    assert np.allclose(*(model.encode([long_text], role=role)[0] for role in ("query", "document")), atol=1e-6)


def test_a_cut_through_an_image_is_refused():
    from lamra.backbones.base import cut_sequence
    from lamra.items import InputError

    with pytest.raises(InputError, match="cut through an image"):
        cut_sequence([1, 2, 9, 9, 3], 3, image_token_id=9)
    assert cut_sequence([9, 9, 1, 2, 3], 3, image_token_id=9) == [9, 9, 1]
    assert cut_sequence([1, 2], 3, image_token_id=9) == [1, 2] and cut_sequence([1, 2], None, 9) == [1, 2]
