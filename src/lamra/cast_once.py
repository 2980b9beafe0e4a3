"""Inference under bf16 autocast with each linear weight cast to bf16 once, not at every call.

Autocast casts an fp32 weight to bf16 each time a linear layer runs, and caches that cast only for
weights that require grad (training). At inference every forward pass therefore copies every
weight of the language model, and with few tokens a pass the copies cost more than the matrix
products: profiled on the compact reranker (pointwise, 10 image candidates, 2 CPU cores), 38% of
the time went to ``aten::copy_``. Here each ``nn.Linear`` weight gets one bf16 copy, kept and swapped
in while a call runs, and the fp32 weight swapped back after. Autocast would have computed exactly
that bf16 tensor (the same rounding) and passes a bf16 weight through unchanged, so the results are
bit-identical; the residual stream, norms and embeddings stay as they were. The copies cost half
the linear weights' fp32 memory again (about 200 MB for the compact model's language model).

A copy is remade when its weight changes (a new ``data_ptr`` or an in-place update, seen through
the tensor's version counter), and a linear whose weight is shared with an embedding (tied
``lm_head``) is left alone, so the embedding keeps its dtype.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

import torch
from torch import nn

_copies: weakref.WeakKeyDictionary[nn.Linear, tuple[int, int, torch.Tensor]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_depth: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()
_swapped: weakref.WeakKeyDictionary[nn.Module, list[tuple[nn.Linear, nn.Parameter]]] = weakref.WeakKeyDictionary()


def _castable_linears(model: nn.Module) -> list[nn.Linear]:
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [m for m in model.modules()
            if isinstance(m, nn.Linear) and m.weight.dtype == torch.float32 and id(m.weight) not in tied]


def _bf16_copy(linear: nn.Linear) -> torch.Tensor:
    weight = linear.weight
    key = (weight.data_ptr(), weight._version)
    cached = _copies.get(linear)
    if cached is None or cached[:2] != key:
        cached = (*key, nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False))
        _copies[linear] = cached
    return cached[2]


@contextlib.contextmanager
def bf16_weights(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s linear layers hold bf16 copies of their weights (made once).
    Only for inference under bf16 autocast: outside it a bf16 weight meets fp32 inputs. Re-entrant
    and safe across threads that share the model: the first to enter swaps, the last to leave restores."""
    with _lock:
        depth = _depth.get(model, 0)
        if depth == 0:
            swapped = []
            for linear in _castable_linears(model):
                swapped.append((linear, linear.weight))
                linear._parameters["weight"] = _bf16_copy(linear)
            _swapped[model] = swapped
        _depth[model] = depth + 1
    try:
        yield
    finally:
        with _lock:
            _depth[model] -= 1
            if _depth[model] == 0:
                for linear, weight in _swapped.pop(model):
                    linear._parameters["weight"] = weight
