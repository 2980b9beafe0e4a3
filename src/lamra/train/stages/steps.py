"""What a stage module hands the training loop: ``StageSteps``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class StageSteps:
    step: Callable[[list[int], int], float]  # (example indices, epoch) -> loss; backprops into the model
    num_examples: int
    grad_reduction: str  # "mean" (contrastive: the loss is a batch mean) or "sum" (token losses)
    order: Any = None  # a batch order (e.g. GroupedBatchOrder); None = the trainer's seeded shuffle
