"""Stage 1 of LamRA-Ret: InfoNCE on language-only pairs (the SimCSE-style NLI csv), LoRA on the LM.

    lamra train stage1 --recipe compact-stage1     (then: lamra train merge --recipe compact-stage1)
"""

from __future__ import annotations

from lamra.train import retrieval
from lamra.train.recipe import Recipe
from lamra.train.stages.steps import StageSteps

TRAINS_LORA = True


def prepare(recipe: Recipe, backbone) -> StageSteps:
    pairs = retrieval.read_text_pairs(recipe)
    return StageSteps(retrieval.contrastive_step_fn(backbone, recipe, lambda i, e: pairs[i]), len(pairs), "mean")
