"""Multi-process helpers: rank facts and the gathered contrastive loss.

Every rank all-gathers the query and candidate embeddings with the autograd-aware all_gather and
computes the *global* loss. Its backward sums the gradients of all ranks' copies of the loss into
each rank's own embeddings (W times the single-process gradient), and DDP's gradient averaging
divides by W again: the parameter gradients equal a one-process run on the global batch, with no
extra scaling (checked in ASSETS.md and tests/train/test_distributed.py). Shards must be equal in size
(use drop_last), because all_gather needs equal shapes.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from lamra.train.losses import DEFAULT_TEMPERATURE, info_nce


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group that torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...).

    A plain `python`/`lamra train` run (no WORLD_SIZE > 1) stays single-process. The backend is
    gloo on CPU and nccl with CUDA. Returns whether the run is distributed.
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_distributed()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def training_device(name: str = "auto") -> torch.device:
    """The device a recipe's ``device`` names; "auto" is CUDA when there is one. A bare "cuda" in a
    torchrun job means this process's GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0, rank order; gradients flow back.

    Single process: returns the tensor itself.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather  # autograd-aware version

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def contrastive_loss_distributed(
    query_emb: torch.Tensor,
    cand_emb: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    hard_negatives: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """The global InfoNCE over all ranks' queries, candidates and hard negatives.

    Each rank passes its local shard; the value is the same on every rank and equals
    `info_nce` on the concatenated global batch. Falls back to `info_nce` in one process.
    """
    if is_distributed():
        _check_equal_shards(query_emb)
        query_emb = gather_with_grad(query_emb)
        cand_emb = gather_with_grad(cand_emb)
        if hard_negatives is not None:
            hard_negatives = gather_with_grad(hard_negatives.reshape(-1, hard_negatives.shape[-1]))
    return info_nce(query_emb, cand_emb, temperature=temperature, hard_negatives=hard_negatives, symmetric=symmetric)


def all_reduce_mean(value: torch.Tensor | float) -> float:
    """Average a scalar over ranks (for logging only; no gradient)."""
    tensor = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    if is_distributed():
        dist.all_reduce(tensor)
        tensor /= world_size()
    return float(tensor)


def _check_equal_shards(local: torch.Tensor) -> None:
    # all_gather with unequal shapes hangs or fails deep inside gloo: give a clear error instead.
    mine = torch.tensor([local.shape[0]], dtype=torch.long, device=local.device)
    sizes = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(sizes, mine)
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"contrastive shards differ in size across ranks ({[int(s) for s in sizes]}); "
            "use equal per-rank batches (drop_last=True)"
        )
