"""``run_stage(recipe)``: load the starting model, set up what trains, run the loop, write ``final/``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lamra.train.distributed import barrier, init_distributed, is_main_process, training_device
from lamra.train.recipe import Recipe
from lamra.train.trainer import TrainResult, Trainer, seed_everything

logger = logging.getLogger(__name__)


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
    from lamra.train.lora import add_lora, train_projector_only
    from lamra.train.merge import write_final
    from lamra.train.stages.models import load_training_backbone

    init_distributed()
    seed_everything(recipe.seed)  # same on every rank: identical LoRA / projector initialisation
    backbone = load_training_backbone(recipe, role="rank" if recipe.stage == "rank" else "retrieval")
    backbone.model.to(training_device(recipe.device))
    if hasattr(backbone, "persist_features"):  # the frozen tower's features: computed once, kept on disk
        backbone.persist_features()
    seed_everything(recipe.seed)
    if recipe.stage == "stage0":
        train_projector_only(backbone)
        model = backbone.hf_model
    else:
        add_lora(backbone, recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout)
        model = backbone.model
        if recipe.train_projector:  # after add_lora, which checks that only adapters train
            backbone.hf_model.multi_modal_projector.requires_grad_(True)
    step_fn, num_examples, reduction, order = _stage_step(recipe, backbone)
    trainer = Trainer(recipe, model, num_examples, step_fn, grad_reduction=reduction, order=order)
    result = trainer.train(stop_after=stop_after, show_progress=show_progress)
    if hasattr(backbone, "feature_cache"):
        backbone.feature_cache.flush()
    final = None
    if trainer.finished:
        if is_main_process():
            final = write_final(recipe, backbone)
        barrier()
        final = final or recipe.run_dir / "final"
    return StageResult(result, final, num_examples)


def warm_vision_features(backbone, recipe: Recipe, data, batch: int = 256) -> None:
    """Run the frozen vision tower over every training image before the loop (under the loop's
    autocast, so the features are the ones a step would compute): steps then cost the same from
    the first one, which the timing and a `max_minutes` budget rely on."""
    if not hasattr(backbone, "feature_cache"):
        return
    from tqdm.auto import tqdm

    from lamra.train.trainer import autocast

    paths = data.image_paths()
    with torch.no_grad(), autocast(recipe, backbone.device):
        for start in tqdm(range(0, len(paths), batch), desc="vision features", disable=not is_main_process()):
            backbone.feature_cache.get_many(backbone.hf_model, [data.image(p) for p in paths[start : start + batch]])
    backbone.feature_cache.flush()


def _stage_step(recipe: Recipe, backbone):
    from lamra.train import align, rerank, retrieval
    from lamra.train.stages.mbeir_data import MBEIRTrainData

    if recipe.stage == "stage0":
        data = MBEIRTrainData.from_recipe(recipe, need_instructions=False)
        captions = align.training_captions(data)
        if recipe.max_train_examples:
            captions = captions[: recipe.max_train_examples]

        def conversation(index: int, epoch: int):
            img_path, caption = captions[index]
            return align.caption_messages(data.image(img_path), caption)

        return rerank.next_token_step_fn(backbone, recipe, conversation), len(captions), "sum", None
    if recipe.stage == "stage1":
        pairs = retrieval.read_text_pairs(recipe)
        return retrieval.contrastive_step_fn(backbone, recipe, lambda i, e: pairs[i]), len(pairs), "mean", None
    if recipe.stage == "stage2":
        data = MBEIRTrainData.from_recipe(recipe)
        warm_vision_features(backbone, recipe, data)
        mined = retrieval.read_mined_negatives(recipe)

        def example(index: int, epoch: int):
            return retrieval.stage2_example(
                data, index, epoch, recipe.hard_negatives, recipe.no_instruction_ratio, mined
            )

        order = None
        if recipe.batch_by_task:
            from lamra.train.distributed import world_size
            from lamra.train.schedule import GroupedBatchOrder

            order = GroupedBatchOrder(
                data.task_groups(), recipe.batch_size, recipe.seed, world_size(), recipe.mixed_batch_ratio
            )
        return retrieval.contrastive_step_fn(backbone, recipe, example), len(data), "mean", order
    if recipe.stage == "rank":
        data = MBEIRTrainData.from_recipe(recipe)
        if not recipe.rerank_data:
            from lamra.train.stages.models import StageSetupError

            raise StageSetupError(f"recipe {recipe.name!r} (rank) needs `rerank_data` (lamra train mine)")
        samples = rerank.RerankSamples(data, rerank.read_mined(recipe.rerank_data), recipe, backbone)
        return rerank.next_token_step_fn(backbone, recipe, samples.sample), len(samples), "sum", None
    raise ValueError(f"unknown stage {recipe.stage!r}")
