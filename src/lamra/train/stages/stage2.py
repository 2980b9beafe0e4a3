"""Stage 2 of LamRA-Ret: multimodal instruction tuning on M-BEIR-format data (InfoNCE, in-batch and
optional hard negatives), LoRA on the LM (and, in the compact recipes, the projector). With
``joint_rank_weight`` the same adapter also learns to rerank (``lamra.train.joint``).

    lamra train stage2 --recipe compact-stage2     (from stage 1's merged weights)
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from lamra.train import joint, rerank, retrieval
from lamra.train.distributed import is_main_process, world_size
from lamra.train.recipe import Recipe
from lamra.train.schedule import GroupedBatchOrder
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.stages.models import StageSetupError
from lamra.train.stages.steps import StageSteps
from lamra.train.trainer import autocast

TRAINS_LORA = True


def prepare(recipe: Recipe, backbone) -> StageSteps:
    if recipe.trunk_distillation and world_size() > 1:
        raise StageSetupError("trunk_distillation runs in one process (its loss is not gathered across ranks)")
    if recipe.joint_rank_weight and world_size() > 1:
        raise StageSetupError("joint_rank_weight runs in one process (the rank part's gradients would be "
                              "averaged over ranks like the retrieval part's, not summed)")
    data = MBEIRTrainData.from_recipe(recipe)
    warm_vision_features(backbone, recipe, data)
    mined = retrieval.read_mined_negatives(recipe, data)

    def example(index: int, epoch: int):
        return retrieval.stage2_example(data, index, epoch, recipe.hard_negatives, recipe.no_instruction_ratio, mined)

    order = None
    if recipe.batch_by_task:
        # A quarter of a batch at most: the rest of a step's negatives stay ordinary ones.
        families = data.families(recipe.batch_family_key, recipe.batch_size // 4) if recipe.batch_family_key else None
        order = GroupedBatchOrder(data.task_groups(), recipe.batch_size, recipe.seed, world_size(),
                                  recipe.mixed_batch_ratio, families)
    step = retrieval.contrastive_step_fn(backbone, recipe, example)
    if recipe.joint_rank_weight:
        samples = joint.rank_samples(recipe, data, backbone)
        rerank.announce_chance_loss(backbone, joint.rank_recipe(recipe), samples, prefix="joint, rank part")
        step = joint.joint_step_fn(recipe, step, samples, backbone)
    return StageSteps(step, len(data), "mean", order)


def warm_vision_features(backbone, recipe: Recipe, data: MBEIRTrainData, batch: int = 256) -> None:
    """Run the frozen vision tower over every training image before the loop (under the loop's
    autocast, so the features are the ones a step would compute): steps then cost the same from
    the first one, which the timing and a `max_minutes` budget rely on."""
    if not hasattr(backbone, "feature_cache"):
        return
    paths = data.image_paths()
    with torch.no_grad(), autocast(recipe, backbone.device):
        for start in tqdm(range(0, len(paths), batch), desc="vision features", disable=not is_main_process()):
            backbone.feature_cache.get_many(backbone.hf_model, [data.image(p) for p in paths[start : start + batch]])
    backbone.feature_cache.flush()
