"""Two CPU processes (gloo) give the same contrastive loss and gradients as one process.

One spawn runs every two-process case (process start-up dominates the time): the plain gathered
loss under DDP, GradCache under DDP, hard negatives, the error for unequal shards, a checkpoint
saved and restored by both ranks, and the naive gather (no autograd) that ASSETS.md found to
halve the gradients, to show the check can fail.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lamra.train import distributed
from lamra.train.train_state import load_checkpoint, save_checkpoint
from lamra.train.gradcache import GradCache
from lamra.train.losses import info_nce

WORLD = 2
GLOBAL_BATCH = 8
TOLERANCE = dict(rtol=1e-10, atol=1e-12)


def make_encoder():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4)).double()


def global_batch():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(GLOBAL_BATCH, 5, dtype=torch.float64, generator=generator) for _ in range(3)]


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def shard(tensor, rank):
    per_rank = len(tensor) // WORLD
    return tensor[rank * per_rank : (rank + 1) * per_rank]


def worker(rank, port, out_dir):
    torch.set_num_threads(1)
    # What torchrun sets for each process; init_distributed reads it.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    assert distributed.init_distributed()
    results = {
        "facts": (distributed.is_distributed(), distributed.rank(), distributed.world_size()),
    }
    queries, candidates, hard = (shard(x, rank) for x in global_batch())

    # 1. One forward of [queries; candidates; hard negatives], the gathered loss, DDP backward.
    for name, with_hard in [("plain", False), ("hard", True)]:
        model = torch.nn.parallel.DistributedDataParallel(make_encoder())
        inputs = torch.cat([queries, candidates, hard] if with_hard else [queries, candidates])
        emb = model(inputs).split(len(queries))
        loss = distributed.contrastive_loss_distributed(emb[0], emb[1], hard_negatives=emb[2] if with_hard else None)
        loss.backward()
        results[name] = (loss.item(), grads(model.module))

    # 2. GradCache under DDP, sub-batches of 1 and 3 (uneven), all-reduce only on the last one.
    for chunk in (1, 3):
        model = torch.nn.parallel.DistributedDataParallel(make_encoder())
        loss = GradCache(model, chunk, no_sync=model.no_sync).step(queries, candidates, hard)
        results[f"gradcache{chunk}"] = (loss.item(), grads(model.module))

    # 3. The official code's gather: no autograd, own slice put back. DDP's averaging halves it.
    model = torch.nn.parallel.DistributedDataParallel(make_encoder())
    q, c = model(torch.cat([queries, candidates])).split(len(queries))
    gathered = []
    for local in (q, c):
        parts = [torch.zeros_like(local) for _ in range(WORLD)]
        dist.all_gather(parts, local.detach().contiguous())
        parts[rank] = local
        gathered.append(torch.cat(parts))
    info_nce(*gathered).backward()
    results["naive"] = (None, grads(model.module))

    # 4. Unequal shards: a clear error on every rank instead of a hang inside gloo.
    try:
        distributed.contrastive_loss_distributed(torch.randn(3 - rank, 4), torch.randn(3 - rank, 4))
    except ValueError as error:
        results["unequal"] = str(error)

    # 5. Checkpoints: every rank keeps its own RNG stream; rank 0 writes the shared files.
    model = torch.nn.parallel.DistributedDataParallel(make_encoder())
    torch.manual_seed(100 + rank)
    path = save_checkpoint(os.path.join(out_dir, "run"), 4, model, data_state={"epoch": 0})
    next_draw = torch.rand(2)
    with torch.no_grad():
        model.module[0].weight.add_(1.0)
    torch.manual_seed(0)
    state = load_checkpoint(path, model)
    results["checkpoint"] = (
        state.step,
        sorted(os.listdir(path)),
        torch.equal(torch.rand(2), next_draw),
        torch.equal(model.module[0].weight, make_encoder()[0].weight),
    )

    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    distributed.shutdown_distributed()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(worker, args=(port, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def one_process(with_hard):
    model = make_encoder()
    queries, candidates, hard = global_batch()
    loss = info_nce(model(queries), model(candidates), hard_negatives=model(hard) if with_hard else None)
    loss.backward()
    return loss.item(), grads(model)


def assert_same(actual, expected):
    assert actual[0] == pytest.approx(expected[0], rel=1e-12)
    for got, want in zip(actual[1], expected[1], strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)


def test_rank_facts(two_process_results):
    assert [r["facts"] for r in two_process_results] == [(True, 0, 2), (True, 1, 2)]
    assert (distributed.is_distributed(), distributed.rank(), distributed.world_size()) == (False, 0, 1)


@pytest.mark.parametrize("case", ["plain", "hard", "gradcache1", "gradcache3"])
def test_two_processes_equal_one_process(two_process_results, case):
    expected = one_process(with_hard=case != "plain")
    for result in two_process_results:  # every rank: the global loss and the same gradients
        assert_same(result[case], expected)


def test_gather_without_autograd_gives_half_the_gradient(two_process_results):
    expected = one_process(with_hard=False)[1]
    for result in two_process_results:
        for got, want in zip(result["naive"][1], expected):
            assert not torch.allclose(got, want)
            torch.testing.assert_close(got * WORLD, want, **TOLERANCE)


def test_unequal_shards_are_refused(two_process_results):
    for result in two_process_results:
        assert "drop_last" in result["unequal"]


def test_single_process_fallbacks():
    x = torch.randn(3, 4)
    assert distributed.gather_with_grad(x) is x
    assert distributed.contrastive_loss_distributed(x, x).item() == pytest.approx(info_nce(x, x).item())
    assert distributed.init_distributed() is False  # no WORLD_SIZE: a plain single-process run


def test_checkpoint_from_two_processes(two_process_results):
    for result in two_process_results:
        step, files, rng_restored, weights_restored = result["checkpoint"]
        assert step == 4 and rng_restored and weights_restored
        assert files == ["meta.json", "rng-rank0.pt", "rng-rank1.pt", "trainable.safetensors"]
