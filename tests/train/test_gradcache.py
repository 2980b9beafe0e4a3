"""GradCache gives the same parameter gradients as one plain backward over the whole batch."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lamra.train.gradcache import GradCache, split_batch
from lamra.train.losses import info_nce

TOLERANCE = dict(rtol=1e-10, atol=1e-12)


class TinyEncoder(torch.nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.first = torch.nn.Linear(6, 16)
        self.dropout = torch.nn.Dropout(dropout)
        self.second = torch.nn.Linear(16, 8)

    def forward(self, x):
        return self.second(self.dropout(torch.tanh(self.first(x))))


def make_encoder(dropout=0.0, lora_dropout=None):
    torch.manual_seed(0)
    model = TinyEncoder(dropout).double()
    if lora_dropout is not None:  # LoRA dropout, the case that matters for LamRA
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=lora_dropout, target_modules=["first", "second"])
        model = get_peft_model(model, config)
        with torch.no_grad():  # LoRA B starts at zero; make the adapter path count
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
    model.train()
    return model


def batches(size=10, hard=False):
    generator = torch.Generator().manual_seed(1)
    sides = 3 if hard else 2
    return [torch.randn(size, 6, dtype=torch.float64, generator=generator) for _ in range(sides)]


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_same_grads(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **TOLERANCE, msg=f"gradient of {name} differs")


def plain_full_batch(model, *data):
    loss = info_nce(*(model(x) for x in data[:2]), hard_negatives=model(data[2]) if len(data) > 2 else None)
    loss.backward()
    return loss.detach(), grads(model)


def chunked_with_grad(model, chunk, *data):
    """The reference under dropout: the same sub-batch forwards GradCache draws, kept in one graph."""
    embeddings = [torch.cat([model(part) for part in x.split(chunk)]) for x in data]
    loss = info_nce(embeddings[0], embeddings[1], hard_negatives=embeddings[2] if len(data) > 2 else None)
    loss.backward()
    return loss.detach(), grads(model)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 4, 10])
def test_gradients_equal_the_plain_full_batch(chunk_size):
    data = batches()
    reference_model, cached_model = make_encoder(), make_encoder()
    reference_loss, reference_grads = plain_full_batch(reference_model, *data)
    loss = GradCache(cached_model, chunk_size, temperature=0.05).step(*data)
    assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-12)
    assert_same_grads(grads(cached_model), reference_grads)


def test_hard_negatives_side_gets_its_gradient_too():
    data = batches(8, hard=True)
    reference_model, cached_model = make_encoder(), make_encoder()
    _, reference_grads = plain_full_batch(reference_model, *data)
    GradCache(cached_model, 3).step(*data)
    assert_same_grads(grads(cached_model), reference_grads)


@pytest.mark.parametrize("model_kind", ["dropout", "lora_dropout"])
def test_dropout_masks_are_replayed(model_kind):
    options = {"dropout": dict(dropout=0.3), "lora_dropout": dict(lora_dropout=0.3)}[model_kind]
    data = batches()
    reference_model, cached_model, careless_model = (make_encoder(**options) for _ in range(3))

    torch.manual_seed(123)
    _, reference_grads = chunked_with_grad(reference_model, 4, *data)
    after_reference = torch.rand(3)

    torch.manual_seed(123)
    GradCache(cached_model, 4).step(*data)
    assert_same_grads(grads(cached_model), reference_grads)
    # The replay ran inside fork_rng: the global generator moved exactly as in the reference.
    assert torch.equal(torch.rand(3), after_reference)

    # Without replay the second pass draws new masks and the gradients are wrong: the check bites.
    torch.manual_seed(123)
    GradCache(careless_model, 4, preserve_rng=False).step(*data)
    careless = grads(careless_model)
    assert any(not torch.allclose(careless[name], reference_grads[name]) for name in careless)


def test_lists_of_examples_and_dict_batches_split_per_example():
    assert [len(part) for part in split_batch(list(range(7)), 3)] == [3, 3, 1]
    parts = split_batch({"x": torch.zeros(5, 2), "ids": ["a", "b", "c", "d", "e"], "flag": True}, 2)
    assert [p["ids"] for p in parts] == [["a", "b"], ["c", "d"], ["e"]]
    assert parts[2]["x"].shape == (1, 2) and parts[0]["flag"] is True
    with pytest.raises(ValueError, match="differ in length"):
        split_batch({"x": torch.zeros(5, 2), "y": torch.zeros(4)}, 2)

    # embed_fn that collates a list of examples itself (how the LamRA trainers call it).
    data = batches(7)
    reference_model, cached_model = make_encoder(), make_encoder()
    _, reference_grads = plain_full_batch(reference_model, *data)
    as_examples = [list(x.unbind(0)) for x in data]
    GradCache(lambda examples: cached_model(torch.stack(examples)), 2).step(*as_examples)
    assert_same_grads(grads(cached_model), reference_grads)


def test_custom_loss_and_accumulation_into_existing_grads():
    data = batches(6)
    reference_model, cached_model = make_encoder(), make_encoder()

    def symmetric(q, c):
        return (info_nce(q, c, 0.1) + info_nce(c, q, 0.1)) / 2

    for _ in range(2):  # .grad accumulates over calls, as .backward() does
        symmetric(*(reference_model(x) for x in data)).backward()
        GradCache(cached_model, 4, loss_fn=symmetric).step(*data)
    assert_same_grads(grads(cached_model), grads(reference_model))


def test_embed_fn_that_is_not_deterministic_is_reported():
    calls = []
    model = make_encoder()

    def shrinking(x):
        calls.append(1)
        return model(x)[: 1 if len(calls) > 4 else None]

    with pytest.raises(RuntimeError, match="second pass"):
        GradCache(shrinking, 2).step(*batches(4))  # two chunks a side: the cached two-pass path


def test_bf16_autocast_embeddings():
    """Under CPU bf16 autocast the embeddings are bf16; the loss runs in float32 and the cached
    gradient is cast back, giving the plain backward's gradients up to bf16 rounding."""
    data = [x.float() for x in batches(8)]
    reference_model, cached_model = make_encoder().float(), make_encoder().float()

    def embed(model):
        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)
        return run

    info_nce(*(embed(reference_model)(x) for x in data)).backward()
    loss = GradCache(embed(cached_model), 3).step(*data)
    assert loss.dtype == torch.float32
    expected = grads(reference_model)
    for name, got in grads(cached_model).items():
        torch.testing.assert_close(got, expected[name], rtol=0.05, atol=0.02)


def test_one_chunk_per_side_takes_the_single_pass_path():
    """When the batch fits one chunk, each side is embedded once (no no-grad pass)."""
    calls = []
    model = make_encoder()

    def counted(x):
        calls.append(torch.is_grad_enabled())
        return model(x)

    GradCache(counted, 8).step(*batches(4))
    assert calls == [True, True]
