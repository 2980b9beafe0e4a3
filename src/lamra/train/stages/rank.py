"""LamRA-Rank: pointwise (Yes/No) and listwise (the positive's number) next-token samples built from
a mined top-K (``lamra train mine``), one LoRA adapter from the base model (stage 0 for compact).

    lamra train mine --recipe compact-rank --retriever runs/compact-stage2/final
    lamra train rank --recipe compact-rank
"""

from __future__ import annotations

from lamra.train import rerank
from lamra.train.mining import of_datasets, read_mined
from lamra.train.recipe import Recipe
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.stages.models import StageSetupError
from lamra.train.stages.steps import StageSteps

TRAINS_LORA = True


def prepare(recipe: Recipe, backbone) -> StageSteps:
    data = MBEIRTrainData.from_recipe(recipe)
    if not recipe.rerank_data:
        raise StageSetupError(f"recipe {recipe.name!r} (rank) needs `rerank_data` (lamra train mine)")
    mined = read_mined(recipe.rerank_data)
    if recipe.rank_datasets:
        mined = of_datasets(mined, recipe.rank_datasets)
        if not mined:
            raise StageSetupError(f"{recipe.rerank_data} holds no query of rank_datasets {recipe.rank_datasets}")
    samples = rerank.RerankSamples(data, mined, recipe, backbone)
    rerank.announce_chance_loss(backbone, recipe, samples)
    if recipe.rank_loss == "grouped":
        return StageSteps(rerank.grouped_step_fn(backbone, recipe, samples), len(samples.queries), "sum")
    return StageSteps(rerank.next_token_step_fn(backbone, recipe, samples.sample), len(samples), "sum")
