"""``run_stage(recipe)``: load the starting model, set up what trains, run the loop, write ``final/``.

Each stage is a module of this package (``STAGE_MODULES``) with ``TRAINS_LORA`` (else the projector
alone trains) and ``prepare(recipe, backbone) -> StageSteps``: its data and its step function.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from lamra.train.distributed import barrier, init_distributed, is_main_process, training_device
from lamra.train.recipe import STAGES, Recipe
from lamra.train.trainer import TrainResult, Trainer, seed_everything

logger = logging.getLogger(__name__)

STAGE_MODULES = {stage: f"lamra.train.stages.{stage}" for stage in STAGES}  # imported when run


@dataclass
class StageResult:
    train: TrainResult
    final_dir: Path | None  # None when stopped early (stop_after)
    num_examples: int

    @property
    def losses(self) -> list[float]:
        return self.train.losses


def run_stage(recipe: Recipe, stop_after: int | None = None, show_progress: bool = True) -> StageResult:
    """Train one stage as its recipe says (resuming its run directory if it has checkpoints)."""
    from lamra.train.lora import add_lora, continue_lora, train_projector_only
    from lamra.train.merge import write_final
    from lamra.train.stages.models import continued_adapter, load_training_backbone

    init_distributed()
    seed_everything(recipe.seed)  # same on every rank: identical LoRA / projector initialisation
    backbone = load_training_backbone(recipe, role="rank" if recipe.stage == "rank" else "retrieval")
    backbone.model.to(training_device(recipe.device))
    if hasattr(backbone, "persist_features"):  # the frozen tower's features: computed once, kept on disk
        backbone.persist_features()
    seed_everything(recipe.seed)
    stage = importlib.import_module(STAGE_MODULES[recipe.stage])
    if stage.TRAINS_LORA:
        if recipe.continue_adapter:
            continue_lora(backbone, Path(recipe.init_from) / continued_adapter(recipe))
        else:
            add_lora(backbone, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
        model = backbone.model
        if recipe.train_projector:  # after add_lora, which checks that only adapters train
            backbone.hf_model.multi_modal_projector.requires_grad_(True)
    else:
        train_projector_only(backbone)
        model = backbone.hf_model
    steps = stage.prepare(recipe, backbone)
    trainer = Trainer(recipe, model, steps.num_examples, steps.step, grad_reduction=steps.grad_reduction,
                      order=steps.order)
    result = trainer.train(stop_after=stop_after, show_progress=show_progress)
    if hasattr(backbone, "feature_cache"):
        backbone.feature_cache.flush()
    final = None
    if trainer.finished:
        if is_main_process():
            final = write_final(recipe, backbone)
        barrier()
        final = final or recipe.run_dir / "final"
    return StageResult(result, final, steps.num_examples)
