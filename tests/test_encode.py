"""LamRA-Ret embeddings on both backbones: batching, padding, pooling, input kinds, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lamra import LamRA
from lamra.items import InputError
from lamra.backbones.qwen_vl import QwenVLBackbone
from lamra.prompts import embedding_messages
from lamra.retriever import (
    drop_tail_after_emb, embed_conversations, pool_before_emb,
)

# Measured on this CPU (compact LMM, bf16 autocast, batch vs the same item alone): min cosine
# 0.99991 over the five mixed items; bf16 weights: 0.99987. The threshold leaves a margin.
BF16_BATCH_COSINE = 0.9995


_loaded: dict[str, LamRA] = {}


@pytest.fixture(params=["qwen2_vl", "qwen2_5_vl", "compact"])
def model(request, tiny_qwen_dirs, compact_backbone):
    """LamRA in fp32 on each backbone (loaded once per module)."""
    if request.param not in _loaded:
        if request.param == "compact":
            _loaded[request.param] = LamRA(compact_backbone, precision="fp32")
        else:
            _loaded[request.param] = LamRA.from_pretrained(tiny_qwen_dirs[request.param], precision="fp32")
    return _loaded[request.param]


@pytest.fixture
def compact_model(compact_backbone):
    return LamRA(compact_backbone, precision="fp32")


def mixed_items(images):
    photo, sticker = images
    return [
        "a short text",
        "a much longer piece of text that needs a lot more padding around the shorter items",
        photo,
        ("a red square on white", sticker),
        ["first look at this", photo, "and then at this", sticker],
    ]


def alone_vs_batch(model, items):
    batch = model.encode(items, batch_size=len(items))
    alone = np.stack([model.encode([item])[0] for item in items])
    return (batch * alone).sum(axis=1)


def test_alone_equals_padded_batch_fp32(model, images):
    cosines = alone_vs_batch(model, mixed_items(images))
    assert cosines.min() > 0.9999, cosines


def test_alone_equals_padded_batch_bf16(compact_backbone, images):
    model = LamRA(compact_backbone, precision="bf16")
    cosines = alone_vs_batch(model, mixed_items(images))
    assert cosines.min() > BF16_BATCH_COSINE, cosines


def test_left_and_right_padding_agree(model, images):
    backbone = model.backbone
    conversations = [embedding_messages(segments) for segments in (["tiny"], [images[0], "a photo of noise"])]
    with torch.no_grad():
        left = embed_conversations(backbone, conversations, padding_side="left")
        right = embed_conversations(backbone, conversations, padding_side="right")
    assert torch.allclose(left, right, atol=1e-4)


def test_vector_is_hidden_state_before_emb(model, images):
    """Recompute one embedding with the plain transformers forward (output_hidden_states)."""
    backbone = model.backbone
    vector = model.encode([("a red square", images[1])])[0]
    segments = [images[1], "a red square"]
    inputs = backbone.build_inputs([embedding_messages(segments)])
    with torch.no_grad():
        output = backbone.hf_model(**inputs, output_hidden_states=True)
    ids = inputs["input_ids"][0].tolist()
    position = ids.index(backbone.emb_token_id) - 1
    expected = F.normalize(output.hidden_states[-1][0, position], dim=-1).numpy()
    assert np.allclose(vector, expected, atol=1e-5)
    assert backbone.tokenizer.decode(ids[position + 1 : position + 3]) == "<emb>."


def test_every_input_kind_encodes(model, images):
    vectors = model.encode(mixed_items(images))
    assert vectors.shape[0] == 5 and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # different inputs give different vectors (no silent fallbacks to a constant)
    similarity = vectors @ vectors.T
    assert (similarity[~np.eye(5, dtype=bool)] < 0.99999).all()


def test_instruction_changes_the_query_vector(compact_model):
    plain = compact_model.encode(["a cat"])[0]
    instructed = compact_model.encode(["a cat"], instruction="Find an image that matches the caption.")[0]
    assert float(plain @ instructed) < 0.9999


def test_encode_empty_list(compact_model):
    assert compact_model.encode([]).shape == (0, 576)


def test_qwen_checkpoint_and_lora_adapter_round_trip(tiny_qwen_dir, tmp_path, images):
    """A LoRA adapter saved with save_pretrained loads back through the public API, same vectors."""
    from peft import LoraConfig, get_peft_model

    backbone = QwenVLBackbone.from_pretrained(tiny_qwen_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=backbone.lora_target_modules, init_lora_weights=False)
    torch.manual_seed(1)
    backbone.model = get_peft_model(backbone.model, config)
    lora_modules = [n for n, _ in backbone.model.named_modules() if n.endswith("lora_A")]
    assert lora_modules and not any("visual" in n for n in lora_modules)
    assert len(lora_modules) == 2 * 7  # two layers x (q, k, v, o, gate, up, down)
    in_memory = LamRA(backbone, precision="fp32").encode(mixed_items(images))
    backbone.model.save_pretrained(tmp_path / "adapter")

    reloaded = LamRA.from_pretrained(tiny_qwen_dir, adapter=tmp_path / "adapter", precision="fp32")
    np.testing.assert_array_equal(reloaded.encode(mixed_items(images)), in_memory)
    base = LamRA.from_pretrained(tiny_qwen_dir, precision="fp32").encode(mixed_items(images))
    assert not np.allclose(base, in_memory, atol=1e-3)  # the adapter really changed the model


def test_compact_checkpoint_round_trip(compact_backbone, tmp_path, images):
    from lamra.backbones.compact import CompactBackbone

    compact_backbone.save_pretrained(tmp_path / "compact")
    reloaded = LamRA(CompactBackbone.from_pretrained(tmp_path / "compact"), precision="fp32")
    original = LamRA(compact_backbone, precision="fp32")
    items = mixed_items(images)
    np.testing.assert_allclose(reloaded.encode(items), original.encode(items), atol=1e-6)


def test_bf16_weights_load_and_agree_with_fp32(compact_backbone, tmp_path, images):
    from lamra.backbones.compact import CompactBackbone

    compact_backbone.save_pretrained(tmp_path / "compact")
    bf16 = CompactBackbone.from_pretrained(tmp_path / "compact", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    items = mixed_items(images)
    cosines = (LamRA(bf16).encode(items) * LamRA(compact_backbone, precision="fp32").encode(items)).sum(1)
    assert cosines.min() > 0.999, cosines


def test_vision_features_are_computed_once(compact_backbone, images):
    from lamra.backbones.compact import VisionFeatureCache

    compact_backbone.feature_cache = cache = VisionFeatureCache()
    model = LamRA(compact_backbone, precision="fp32")
    first = model.encode([images[0], ("again", images[0]), images[1]])
    assert len(cache) == 2
    np.testing.assert_allclose(model.encode([images[0]])[0], first[0], atol=1e-6)
    assert len(cache) == 2


def test_vision_features_of_one_precision_are_not_served_to_another(compact_backbone, images):
    """A bf16-autocast run fills the cache first; an fp32 run of the same image must still get the
    features an fp32 tower computes, as it would in a fresh process."""
    from lamra.backbones.compact import VisionFeatureCache
    from lamra.backbones.compact_modeling import preprocess_images

    model = compact_backbone.hf_model
    cache = VisionFeatureCache()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_bf16 = cache.get_many(model, [images[0]])
    in_fp32 = cache.get_many(model, [images[0]])
    assert len(cache) == 2
    fresh_fp32 = model.image_features(preprocess_images([images[0].convert("RGB")]))
    torch.testing.assert_close(in_fp32, fresh_fp32)
    assert not torch.equal(in_fp32, under_bf16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(cache.get_many(model, [images[0]]), under_bf16, rtol=0, atol=0)
    assert len(cache) == 2


def test_global_image_token_is_the_map_mean_before_the_grid(compact_backbone, images):
    from lamra.backbones.compact_modeling import preprocess_images

    model = compact_backbone.hf_model
    pixels = preprocess_images([images[0].convert("RGB")])
    grid_only = model.image_features(pixels)
    maps = model.vision_tower.extract_features(pixels)
    model.config.global_image_token = True
    try:
        with_global = model.image_features(pixels)
        assert model.config.num_image_tokens == grid_only.shape[1] + 1
    finally:
        model.config.global_image_token = False
    assert with_global.shape[1] == grid_only.shape[1] + 1
    torch.testing.assert_close(with_global[:, 0], maps.mean(dim=(2, 3)).float())
    torch.testing.assert_close(with_global[:, 1:], grid_only)


def test_vision_features_persist_to_disk_and_load_without_the_tower(compact_backbone, images, tmp_path, monkeypatch):
    from lamra.backbones.compact import VisionFeatureCache

    first = VisionFeatureCache()
    assert first.persist_to(tmp_path, "layout") == 0
    computed = first.get_many(compact_backbone.hf_model, list(images))
    shard = first.flush()
    assert shard is not None and shard.parent == tmp_path / "layout" and first.flush() is None
    assert not list((tmp_path / "layout").glob("*.tmp"))

    second = VisionFeatureCache()
    assert second.persist_to(tmp_path, "layout") == 2
    assert VisionFeatureCache().persist_to(tmp_path, "another-layout") == 0  # layouts never mix

    def no_tower(*args, **kwargs):
        raise AssertionError("the tower ran although the features were on disk")

    monkeypatch.setattr(compact_backbone.hf_model, "image_features", no_tower)
    torch.testing.assert_close(second.get_many(compact_backbone.hf_model, list(images)), computed)


def test_the_converted_tokenizer_has_smollm2s_special_tokens(compact_backbone):
    # Conversions of the GGUF differ between transformers releases; padding and the ChatML turns
    # rely on these (a missing pad token fails every padded batch).
    tokenizer = compact_backbone.tokenizer
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
    assert tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_search_over_precomputed_corpus_embeddings_equals_encoding_the_corpus(compact_model, images, tmp_path):
    from lamra.collection import embed_collection

    images[0].save(tmp_path / "photo.png")
    records = [{"txt": "a red square"}, {"img_path": "photo.png"}, {"txt": "a blue circle"}, {"txt": "a red square"}]
    embedded = embed_collection(compact_model, records, tmp_path, show_progress=False)
    fresh = compact_model.search(["red square"], corpus=embedded.items, image_root=tmp_path, top_k=4)[0]
    reused = embedded.search(compact_model, ["red square"], top_k=4)[0]
    assert [h.id for h in reused] == [h.id for h in fresh]
    assert [h.score for h in reused] == pytest.approx([h.score for h in fresh], abs=1e-5)
    assert [h.id for h in reused].index(0) < [h.id for h in reused].index(3)  # equal scores: corpus order
    with pytest.raises(InputError, match="3 corpus embeddings for 4"):
        compact_model.search(["x"], corpus=embedded.items, corpus_embeddings=embedded.vectors[:3])


# --- the speed paths change nothing: the tail after <emb> cut, the CPU attention kernel ---

def test_tail_after_emb_is_cut_and_the_vector_is_the_same(model, images):
    backbone = model.backbone
    conversations = [embedding_messages(s) for s in (["tiny"], [images[0], "a photo of noise"])]
    inputs = backbone.build_inputs(conversations)
    cut = drop_tail_after_emb(inputs, backbone.emb_token_id)
    assert cut["input_ids"].shape[1] < inputs["input_ids"].shape[1]
    assert (cut["input_ids"][:, -1] == backbone.emb_token_id).all()
    with torch.no_grad():
        whole = pool_before_emb(backbone.hidden_states(inputs), inputs["input_ids"], backbone.emb_token_id)
        short = pool_before_emb(backbone.hidden_states(cut), cut["input_ids"], backbone.emb_token_id)
    assert torch.allclose(whole, short, atol=1e-5)


def test_tail_is_kept_when_rows_end_differently():
    emb = 7
    right_padded = {"input_ids": torch.tensor([[1, emb, 2, 0], [1, 1, emb, 2]]), "attention_mask": torch.ones(2, 4)}
    no_emb = {"input_ids": torch.tensor([[1, emb, 2], [1, 1, 2]]), "attention_mask": torch.ones(2, 3)}
    assert drop_tail_after_emb(right_padded, emb) is right_padded
    assert drop_tail_after_emb(no_emb, emb) is no_emb
    aligned = {"input_ids": torch.tensor([[0, emb, 2, 3], [1, emb, 2, 3]]), "attention_mask": torch.ones(2, 4),
               "image_features": torch.ones(5, 4)}
    cut = drop_tail_after_emb(aligned, emb)
    assert cut["input_ids"].tolist() == [[0, emb], [1, emb]] and cut["attention_mask"].shape == (2, 2)
    assert cut["image_features"] is aligned["image_features"]  # per image, not per token


def test_plain_attention_kernel_computes_what_sdpa_computes(compact_model, images, monkeypatch):
    import lamra.backbones.compact as compact

    items = mixed_items(images)
    assert compact.ATTENTION_KERNEL == "eager"
    eager = compact_model.encode(items)
    assert compact_model.backbone.hf_model.language_model.config._attn_implementation == "eager"
    monkeypatch.setattr(compact, "ATTENTION_KERNEL", "sdpa")
    sdpa = compact_model.encode(items)
    assert compact_model.backbone.hf_model.language_model.config._attn_implementation == "sdpa"
    assert (eager * sdpa).sum(axis=1).min() > 0.99999
