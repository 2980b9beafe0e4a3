"""GradCache (Gao et al., 2021): a contrastive batch larger than memory, with exact gradients.

1. Embed every sub-batch without a graph, remembering the RNG state before each one.
2. Compute the loss on the full embedding matrices and its gradient w.r.t. the embeddings.
3. Re-run each sub-batch with a graph, under the RNG state it had in step 1 (so dropout, LoRA
   dropout included, draws the same masks), and backprop the cached embedding gradient into it.

Memory then scales with the sub-batch (chunk) size, while the loss sees the whole batch. The
parameter gradients equal a plain backward through the full batch (tests/train/test_gradcache.py).
With `contrastive_loss_distributed` as the loss it also works across processes; pass
`no_sync=ddp_model.no_sync` so DDP all-reduces only once, after the last sub-batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from lamra.train.distributed import contrastive_loss_distributed

EmbedFn = Callable[[Any], torch.Tensor]
LossFn = Callable[..., torch.Tensor]
SplitFn = Callable[[Any, int], list[Any]]


def split_batch(batch: Any, chunk_size: int) -> list[Any]:
    """Cut a batch into sub-batches of at most `chunk_size` examples along the first axis.

    A batch is a Tensor, a list/tuple of examples (embed_fn collates them), or a mapping of
    tensors / lists that share the first axis. Batches whose layout is not per-example (e.g.
    Qwen2-VL's flattened pixel patches) should be passed uncollated, or with a custom split_fn.
    """
    size = batch_size_of(batch)
    return [_slice(batch, start, min(start + chunk_size, size)) for start in range(0, size, chunk_size)]


def batch_size_of(batch: Any) -> int:
    if isinstance(batch, torch.Tensor) or isinstance(batch, Sequence) and not isinstance(batch, str):
        return len(batch)
    if isinstance(batch, Mapping):
        sizes = {len(v) for v in batch.values() if isinstance(v, torch.Tensor | list | tuple)}
        if len(sizes) != 1:
            raise ValueError(
                f"cannot split a batch whose fields differ in length ({sorted(sizes)}); "
                "pass a list of examples or a custom split_fn"
            )
        return sizes.pop()
    raise TypeError(f"cannot split a batch of type {type(batch).__name__}; pass a custom split_fn")


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, Mapping):
        return {
            key: value[start:stop] if isinstance(value, torch.Tensor | list | tuple) else value
            for key, value in batch.items()
        }
    return batch[start:stop]


class RngSnapshot:
    """The CPU (and, when in use, CUDA) RNG state at one moment, to replay a forward exactly.

    Same idea as torch.utils.checkpoint: replaying happens inside fork_rng, so the replay does
    not advance the global generators a second time.
    """

    def __init__(self) -> None:
        self.cpu_state = torch.get_rng_state()
        self.cuda_devices = _cuda_devices_in_use()
        self.cuda_states = [torch.cuda.get_rng_state(d) for d in self.cuda_devices]

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.cpu_state)
            for device, state in zip(self.cuda_devices, self.cuda_states):
                torch.cuda.set_rng_state(state, device)
            yield


def _cuda_devices_in_use() -> list[int]:
    # Only touch CUDA when it is already initialised: never start a CUDA context on CPU runs.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


class GradCache:
    """Contrastive training step with gradient caching.

    embed_fn(sub_batch) -> Tensor[n, D]  the trainable encoder (shared by all sides)
    chunk_size                           examples per forward; None or 0: the whole batch at once
    loss_fn(*embeddings) -> scalar       default: the (gathered) InfoNCE with `temperature`
    no_sync                              e.g. `ddp_model.no_sync`: skip DDP's all-reduce on all
                                         sub-batches but the last one
    preserve_rng                         replay dropout masks (turn off only to show it matters)

    `step(queries, candidates[, hard_negatives])` embeds each side, backprops the loss into the
    parameters' .grad (accumulating, as .backward() does) and returns the detached loss.
    """

    def __init__(
        self,
        embed_fn: EmbedFn,
        chunk_size: int | None,
        loss_fn: LossFn | None = None,
        *,
        temperature: float = 0.05,
        symmetric: bool = False,
        split_fn: SplitFn = split_batch,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
        preserve_rng: bool = True,
    ) -> None:
        if chunk_size is not None and chunk_size < 0:
            raise ValueError(f"chunk_size must be positive (or None for no chunking), got {chunk_size}")
        self.embed_fn = embed_fn
        self.chunk_size = chunk_size or None
        self.loss_fn = loss_fn or (
            lambda q, c, h=None: contrastive_loss_distributed(
                q, c, temperature=temperature, hard_negatives=h, symmetric=symmetric
            )
        )
        self.split_fn = split_fn
        self.no_sync = no_sync
        self.preserve_rng = preserve_rng

    def __call__(self, *batches: Any) -> torch.Tensor:
        return self.step(*batches)

    def step(self, *batches: Any) -> torch.Tensor:
        """One loss + backward over `batches` (queries, candidates, optional hard negatives)."""
        chunked = [self._chunks(batch) for batch in batches]
        if all(len(chunks) == 1 for chunks in chunked):
            # Every side fits in one forward: plain backprop gives the same gradients, one pass fewer.
            loss = self.loss_fn(*(self.embed_fn(chunks[0]) for chunks in chunked))
            loss.backward()
            return loss.detach()

        # Pass 1: embeddings without a graph; the RNG state before each sub-batch is kept.
        snapshots: list[list[RngSnapshot | None]] = []
        rows: list[list[int]] = []
        cached: list[torch.Tensor] = []
        with torch.no_grad():
            for chunks in chunked:
                side_snapshots, side_embeddings = [], []
                for chunk in chunks:
                    side_snapshots.append(RngSnapshot() if self.preserve_rng else None)
                    side_embeddings.append(self.embed_fn(chunk))
                snapshots.append(side_snapshots)
                rows.append([len(embedding) for embedding in side_embeddings])
                cached.append(torch.cat(side_embeddings, dim=0))

        # The loss on the full matrices, and d loss / d embedding for every row.
        leaves = [embedding.detach().requires_grad_(True) for embedding in cached]
        loss = self.loss_fn(*leaves)
        embedding_grads = torch.autograd.grad(loss, leaves, allow_unused=True)

        # Pass 2: each sub-batch again, with a graph, and its slice of the cached gradient.
        jobs = []
        for chunks, side_snapshots, side_rows, embedding, full_grad in zip(
            chunked, snapshots, rows, cached, embedding_grads
        ):
            if full_grad is None:  # a side the loss ignores still runs: DDP expects every forward
                full_grad = torch.zeros_like(embedding)
            jobs.extend(zip(chunks, side_snapshots, torch.split(full_grad, side_rows, dim=0)))
        for index, (chunk, snapshot, grad) in enumerate(jobs):
            is_last = index == len(jobs) - 1
            sync = contextlib.nullcontext() if is_last or self.no_sync is None else self.no_sync()
            rng = snapshot.restored() if snapshot is not None else contextlib.nullcontext()
            with sync:
                with rng:
                    embedding = self.embed_fn(chunk)
                if embedding.shape != grad.shape:
                    raise RuntimeError(
                        f"embed_fn gave shape {tuple(embedding.shape)} on the second pass but "
                        f"{tuple(grad.shape)} on the first: it must be deterministic given the RNG"
                    )
                torch.autograd.backward(embedding, grad.to(embedding.dtype))
        return loss.detach()

    def _chunks(self, batch: Any) -> list[Any]:
        if self.chunk_size is None:
            return [batch]
        return self.split_fn(batch, self.chunk_size)
