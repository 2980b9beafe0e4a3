"""bf16 weights cast once for inference: the same numbers as autocast's per-call casts, the fp32
weights back afterwards, tied embeddings untouched, copies remade when a weight changes."""

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

import lamra.retriever as retriever_module
from lamra.backbones.compact import VisionFeatureCache
from lamra.cast_once import bf16_weights
from lamra.reranker import Reranker
from lamra.retriever import Retriever


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 16)
        self.hidden = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight  # tied, as SmolLM2's lm_head

    def forward(self, ids):
        x = self.embed(ids)
        return self.head(x + self.hidden(x))


def autocast_bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@torch.no_grad()
def test_outputs_equal_per_call_casts_and_the_fp32_weights_come_back():
    model, ids = TiedLM(), torch.arange(10)[None]
    hidden_weight, embed_weight = model.hidden.weight, model.embed.weight
    with autocast_bf16():
        expected = model(ids)
        with bf16_weights(model):
            assert model.hidden.weight.dtype == torch.bfloat16
            assert model.embed.weight.dtype == torch.float32 and model.head.weight is embed_weight  # tied: left alone
            with bf16_weights(model):  # re-entrant: the inner exit restores nothing
                pass
            assert model.hidden.weight.dtype == torch.bfloat16
            got = model(ids)
    assert torch.equal(got, expected)
    assert model.hidden.weight is hidden_weight and model.embed.weight is embed_weight


@torch.no_grad()
def test_a_changed_weight_gets_a_fresh_copy():
    model, ids = TiedLM(), torch.arange(10)[None]
    with autocast_bf16(), bf16_weights(model):
        before = model(ids)
    model.hidden.weight.add_(1.0)  # in place: the same tensor, a new version
    with autocast_bf16():
        expected = model(ids)
        with bf16_weights(model):
            after = model(ids)
    assert torch.equal(after, expected) and not torch.equal(after, before)


def no_cast_once(monkeypatch):
    monkeypatch.setattr(retriever_module, "bf16_weights", lambda model: contextlib.nullcontext())


def test_encode_and_rerank_under_bf16_are_unchanged_by_it(compact_backbone, images, monkeypatch):
    # a cache of its own: vision features computed under bf16 autocast must not reach the fp32 tests
    monkeypatch.setattr(compact_backbone, "feature_cache", VisionFeatureCache())
    items = ["a red square", images[0], [images[1], "a sticker"]]
    retriever, reranker = Retriever(compact_backbone, precision="bf16"), Reranker(compact_backbone, precision="bf16")
    query, candidates = ["a red square"], [[images[1]], ["a blue circle"], [images[0], "noise"]]

    def run():
        return (retriever.encode(items), reranker.pointwise(query, candidates, shared_prefix=True),
                reranker.pointwise(query, candidates, shared_prefix=False), reranker.listwise(query, candidates))

    weights = [p for p in compact_backbone.model.parameters()]
    swapped_dtypes = []

    @contextlib.contextmanager
    def spy(model):
        with bf16_weights(model):
            swapped_dtypes.append({p.dtype for p in model.parameters()})
            yield

    monkeypatch.setattr(retriever_module, "bf16_weights", spy)
    cast_once = run()
    assert len(swapped_dtypes) >= 4 and all(torch.bfloat16 in d for d in swapped_dtypes)  # every call swapped
    assert [p for p in compact_backbone.model.parameters()] == weights
    assert {p.dtype for p in weights} == {torch.float32}
    no_cast_once(monkeypatch)
    per_call = run()
    for got, expected in zip(cast_once, per_call, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_training_keeps_plain_autocast(compact_backbone):
    """With gradients on, the weights are not swapped (the trainer's path)."""
    context = retriever_module.autocast_for(torch.device("cpu"), "bf16", compact_backbone.model)
    assert isinstance(context, torch.autocast)
    with torch.no_grad():
        assert not isinstance(retriever_module.autocast_for(torch.device("cpu"), "bf16", compact_backbone.model),
                              torch.autocast)


def test_fp32_inference_is_untouched(compact_backbone):
    with torch.no_grad():
        context = retriever_module.autocast_for(torch.device("cpu"), "fp32", compact_backbone.model)
    assert isinstance(context, contextlib.nullcontext)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_embeddings_under_bf16_are_unchanged_by_it(tiny_qwen_dirs, model_type, images, monkeypatch):
    """The Qwen towers read weight dtypes in places (e.g. the vision input cast): still the same numbers."""
    from lamra import LamRA

    model = LamRA.from_pretrained(tiny_qwen_dirs[model_type], precision="bf16")
    items = ["a short text", images[0], ("a red square on white", images[1])]
    cast_once = model.encode(items)
    no_cast_once(monkeypatch)
    np.testing.assert_array_equal(cast_once, model.encode(items))
