"""Learning-rate schedule: linear warmup then cosine decay (as the official runs, warmup 3%)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length rounded up, as Hugging Face's Trainer does."""
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return math.ceil(total_steps * warmup_ratio)


def cosine_lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.03,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """LambdaLR: 0 -> lr linearly over ceil(warmup_ratio * total_steps), then cosine to min_lr.

    Call scheduler.step() after each optimizer.step(); its state_dict goes into checkpoints.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = warmup_steps_for(total_steps, warmup_ratio)
    return LambdaLR(optimizer, lambda step: cosine_lr_factor(step, total_steps, warmup, min_lr_ratio))


def count_training_steps(
    num_examples: int, global_batch_size: int, epochs: float = 1.0, max_steps: int | None = None
) -> int:
    """Optimizer steps of a run: `max_steps` when set (the data repeats as needed, as in Hugging
    Face's Trainer), otherwise full batches only (drop_last) times `epochs`."""
    if global_batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {global_batch_size}")
    if max_steps is not None:
        if max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {max_steps}")
        if num_examples < global_batch_size:
            raise ValueError(f"{num_examples} examples cannot fill one batch of {global_batch_size}")
        return max_steps
    total = math.ceil((num_examples // global_batch_size) * epochs)
    if total <= 0:
        raise ValueError(
            f"no training steps: {num_examples} examples, batch {global_batch_size}, epochs {epochs}"
        )
    return total


class BatchOrder:
    """Which examples each optimizer step sees: a pure function of (seed, step).

    Epoch e uses a fresh permutation drawn from `seed + e`; its leftover examples (fewer than a
    global batch) are dropped, so every step is full and the per-rank shards are equal (needed by
    the gathered contrastive loss). Because nothing but the step is state, a resumed run picks
    up exactly where the killed one was.
    """

    def __init__(self, num_examples: int, global_batch_size: int, seed: int, num_ranks: int = 1) -> None:
        if global_batch_size % num_ranks:
            raise ValueError(f"batch size {global_batch_size} does not split evenly over {num_ranks} processes")
        if num_examples < global_batch_size:
            raise ValueError(f"{num_examples} examples cannot fill one batch of {global_batch_size}")
        self.num_examples = num_examples
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.num_ranks = num_ranks
        self.steps_per_epoch = num_examples // global_batch_size

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_indices(self, step: int) -> list[int]:
        """Example indices of the whole batch at 0-based optimizer step `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        start = position * self.global_batch_size
        return order[start : start + self.global_batch_size].tolist()

    def rank_indices(self, step: int, rank: int) -> list[int]:
        """This process's contiguous shard of the batch (rank order = all_gather order)."""
        per_rank = self.global_batch_size // self.num_ranks
        return self.global_indices(step)[rank * per_rank : (rank + 1) * per_rank]


class GroupedBatchOrder(BatchOrder):
    """Like `BatchOrder`, but every batch is drawn from one group (e.g. one task).

    Epoch e shuffles each group with `seed + e`, cuts it into full batches (a group's leftover is
    dropped, as `BatchOrder` drops the epoch's), and shuffles the batches of all groups together,
    so the groups interleave across steps. In-batch negatives then share the query's task and
    modalities: they cannot be told apart by modality alone.

    ``mixed_ratio`` of the epoch's batches (chosen with the same generator) pool their examples and
    are re-cut across groups: those steps show negatives of other tasks and modalities, which a
    search over a pool of every modality needs. The number of steps per epoch does not change.

    ``families`` (a partition of some example indices, each family inside one group) keeps each
    family's members next to each other when a group is shuffled: the family order and each
    family's own order are drawn, then the group is cut. A batch then holds whole families (one
    may be split at a batch edge), so a query's in-batch negatives include its family's other
    members: hard negatives at no extra cost (TAS-Balanced samples batches by topic the same way).
    """

    def __init__(
        self, groups: list[list[int]], global_batch_size: int, seed: int, num_ranks: int = 1,
        mixed_ratio: float = 0.0, families: list[list[int]] | None = None,
    ) -> None:
        if not 0.0 <= mixed_ratio <= 1.0:
            raise ValueError(f"mixed_ratio must be in [0, 1], got {mixed_ratio}")
        sizes = [len(group) for group in groups]
        super().__init__(sum(sizes), global_batch_size, seed, num_ranks)
        self.groups = [list(group) for group in groups if len(group) >= global_batch_size]
        if not self.groups:
            raise ValueError(f"no group holds a full batch of {global_batch_size} (group sizes {sizes})")
        self.steps_per_epoch = sum(len(group) // global_batch_size for group in self.groups)
        self.mixed_ratio = mixed_ratio
        self.families = [list(family) for family in families or [] if family]
        self._family_of = {i: n for n, family in enumerate(self.families) for i in family}
        self._epoch_batches: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            batches = []
            for group in self.groups:
                order = self._shuffled(group, generator)
                for start in range(0, len(group) - self.global_batch_size + 1, self.global_batch_size):
                    batches.append(order[start : start + self.global_batch_size])
            shuffled = torch.randperm(len(batches), generator=generator).tolist()
            count = round(self.mixed_ratio * len(batches))
            if count > 1:  # that many batches, drawn apart from the step order, swap examples across groups
                mixed = torch.randperm(len(batches), generator=generator)[:count].tolist()
                pooled = [i for slot in mixed for i in batches[slot]]
                pooled = [pooled[i] for i in torch.randperm(len(pooled), generator=generator).tolist()]
                size = self.global_batch_size
                for n, slot in enumerate(mixed):
                    batches[slot] = pooled[n * size : (n + 1) * size]
            self._epoch_batches = (epoch, [batches[i] for i in shuffled])
        return self._epoch_batches[1]

    def _shuffled(self, group: list[int], generator: torch.Generator) -> list[int]:
        """The group in a random order; with families, each family's members stay together."""
        if not self.families:
            return [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
        blocks: dict[object, list[int]] = {}
        for i in group:  # an index in no family is a family of its own
            blocks.setdefault(self._family_of.get(i, ("alone", i)), []).append(i)
        units = list(blocks.values())
        order: list[int] = []
        for u in torch.randperm(len(units), generator=generator).tolist():
            unit = units[u]
            order += [unit[i] for i in torch.randperm(len(unit), generator=generator).tolist()]
        return order

    def global_indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        return self._batches(epoch)[position]
