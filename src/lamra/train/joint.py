"""One adapter for both jobs: retrieval and reranking trained together (the paper's first limitation:
LamRA keeps two models, one per job).

A compact stage-2 recipe with ``joint_rank_weight`` > 0 runs, in every optimizer step, its usual
contrastive step on the retrieval batch and then the rank stage's next-token step (pointwise Yes/No
and listwise samples, ``lamra.train.rerank``) on ``joint_rank_batch`` samples of the mined
``rerank_data``, weighted by ``joint_rank_weight``; the gradients of both add up in the one adapter.
The package's rank role is then the retrieval model itself (``lamra.train.merge``), and ``LamRA``
loads one model for search and rerank.

The rank samples of a step are drawn by a generator seeded by (seed, epoch, the step's retrieval
indices), so a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import random

from lamra.train import rerank
from lamra.train.mining import read_mined
from lamra.train.recipe import Recipe
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.trainer import StepFn


def rank_recipe(recipe: Recipe) -> Recipe:
    """The recipe the rank samples are cut and batched with: the rank stage's sequence length."""
    return dataclasses.replace(recipe, max_length=recipe.joint_rank_max_length, chunk_size=recipe.joint_rank_batch)


def rank_samples(recipe: Recipe, data: MBEIRTrainData, backbone) -> rerank.RerankSamples:
    return rerank.RerankSamples(data, read_mined(recipe.rerank_data), rank_recipe(recipe), backbone)


def draw_rank_indices(recipe: Recipe, num_samples: int, retrieval_indices: list[int], epoch: int) -> list[int]:
    """The rank samples of the step whose retrieval batch is ``retrieval_indices``."""
    rng = random.Random(f"{recipe.seed}:{epoch}:joint:{','.join(map(str, retrieval_indices))}")
    return rng.sample(range(num_samples), min(recipe.joint_rank_batch, num_samples))


def joint_step_fn(recipe: Recipe, retrieval_step: StepFn, samples: rerank.RerankSamples, backbone) -> StepFn:
    """The Trainer's step: the retrieval step, then the weighted rank step; returns the total loss
    with each job's part (logged as ``retrieval`` and ``rank``, the latter unweighted)."""
    rank_step = rerank.next_token_step_fn(backbone, rank_recipe(recipe), samples.sample, weight=recipe.joint_rank_weight)

    def step(indices: list[int], epoch: int):
        retrieval_loss = float(retrieval_step(indices, epoch))
        rank_loss = rank_step(draw_rank_indices(recipe, len(samples), indices, epoch), epoch)
        return retrieval_loss + rank_loss, {"retrieval": retrieval_loss, "rank": rank_loss / recipe.joint_rank_weight}

    return step
