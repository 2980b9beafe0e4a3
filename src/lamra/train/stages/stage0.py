"""Stage 0 (compact backbone only): align the fresh projector by captioning training images, the
rest frozen (LLaVA's first stage).

    lamra train stage0 --recipe compact-stage0
"""

from __future__ import annotations

from lamra.train import align, rerank
from lamra.train.recipe import Recipe
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.stages.steps import StageSteps

TRAINS_LORA = False  # the projector alone trains


def prepare(recipe: Recipe, backbone) -> StageSteps:
    data = MBEIRTrainData.from_recipe(recipe, need_instructions=False)
    captions = align.training_captions(data)
    if recipe.max_train_examples:
        captions = captions[: recipe.max_train_examples]

    def conversation(index: int, epoch: int):
        img_path, caption = captions[index]
        return align.caption_messages(data.image(img_path), caption)

    return StageSteps(rerank.next_token_step_fn(backbone, recipe, conversation), len(captions), "sum")
