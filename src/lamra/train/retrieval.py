"""LamRA-Ret training: stage 1 (language-only pairs) and stage 2 (M-BEIR instruction tuning).

Both are InfoNCE from query to candidate over the pooled hidden state before ``<emb>`` (temperature
from the recipe, 0.05 by default), in-batch negatives gathered across processes, optional hard
negatives as extra columns, computed with GradCache in chunks of ``chunk_size`` examples.

Examples are ``(query segments, candidate segments, [hard-negative segments, ...])``:

- stage 1: ``(sent0, sent1, [hard_neg])`` from the SimCSE-style csv (no instruction);
- stage 2: per query, a positive drawn from ``pos_cand_list`` and an instruction drawn from its
  (dataset id, query modality, positive's modality) row, both with a generator seeded by
  (seed, epoch, qid); the query text is ``format_mbeir_text(f"{instruction} {query_txt}")``;
  hard negatives drawn from ``neg_cand_list`` and, with ``mined_negatives``, the query's first
  ``mined_negative_depth`` mined candidates (ANCE-style: the retriever's own near misses), topped
  up with random pool candidates, when ``hard_negatives > 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from peft.helpers import disable_input_dtype_casting
from PIL import Image

from lamra.backbones.base import Backbone
from lamra.data.nli_csv import read_nli_csv
from lamra.items import Segment
from lamra.prompts import embedding_messages
from lamra.retriever import embed_conversations
from lamra.train.distributed import contrastive_loss_distributed
from lamra.train.gradcache import GradCache
from lamra.train.losses import similarity_distillation
from lamra.train.recipe import Recipe
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.stages.models import StageSetupError
from lamra.train.trainer import autocast

Example = tuple[list[Segment], list[Segment], list[list[Segment]]]

# Room left for the chat template and the summarise suffix when cutting texts to max_length.
TEMPLATE_TOKENS = 32


def read_mined_negatives(recipe: Recipe, data: MBEIRTrainData) -> dict[str, list[str]] | None:
    """qid -> the first ``mined_negative_depth`` candidates of each mined file, in file order (None
    without ``mined_negatives``). Several files: e.g. one mined in the local pools (the right modality,
    near misses of content) and one in the global pool (the wrong modality ranked too high).
    ``mined_negative_modality: other`` keeps only those of another modality than the positives."""
    if not recipe.mined_negatives:
        return None
    from lamra.train.mining import read_mined

    files = [recipe.mined_negatives] if isinstance(recipe.mined_negatives, str) else recipe.mined_negatives
    negatives: dict[str, list[str]] = {}
    for path in files:
        for qid, record in read_mined(path).items():
            negatives.setdefault(qid, []).extend(record["top_docs"][: recipe.mined_negative_depth])
    return keep_other_modality(negatives, data) if recipe.mined_negative_modality == "other" else negatives


def keep_other_modality(mined: dict[str, list[str]], data: MBEIRTrainData) -> dict[str, list[str]]:
    """Each query keeps the mined candidates whose modality none of its positives has (an image ranked
    above the caption an image query asks for)."""
    kept = {}
    for query in data.queries:
        wanted = {data.pool[did].modality for did in query.pos_cand_list if did in data.pool}
        kept[query.qid] = [did for did in mined.get(query.qid, [])
                           if did in data.pool and data.pool[did].modality not in wanted]
    return kept


def read_text_pairs(recipe: Recipe) -> list[Example]:
    if not recipe.train_data:
        raise StageSetupError(f"recipe {recipe.name!r} (stage1) needs `train_data` (the text-pair csv)")
    pairs = []
    for sent0, sent1, hard_neg in read_nli_csv(recipe.train_data):
        if recipe.hard_negatives and hard_neg is None:
            raise StageSetupError(f"{recipe.train_data}: hard_negatives > 0 but a row has no hard_neg")
        pairs.append(([sent0], [sent1], [[hard_neg]] if recipe.hard_negatives else []))
        if recipe.max_train_examples and len(pairs) >= recipe.max_train_examples:
            break
    if recipe.hard_negatives > 1:
        raise StageSetupError("the text-pair csv has one hard negative per row: set hard_negatives to 0 or 1")
    return pairs


def stage2_example(
    data: MBEIRTrainData,
    index: int,
    epoch: int,
    hard_negatives: int = 0,
    no_instruction_ratio: float = 0.0,
    mined: dict[str, list[str]] | None = None,
) -> Example:
    """``mined``: qid -> the candidates a retriever ranked first for it (extra hard negatives)."""
    query = data.queries[index]
    rng = data.rng_for(query, epoch, "stage2")
    positive = rng.choice(data.positives(query))
    instruction = data.instruction(query, data.pool[positive].modality, rng)
    # Some queries without an instruction, so the instruction cannot drown the item itself.
    if no_instruction_ratio and rng.random() < no_instruction_ratio:
        instruction = None
    negatives: list[list[Segment]] = []
    if hard_negatives:
        offered = dict.fromkeys([*query.neg_cand_list, *(mined or {}).get(query.qid, [])])  # ordered, unique
        listed = [did for did in offered if did in data.pool and did not in query.pos_cand_list]
        chosen = rng.sample(listed, min(hard_negatives, len(listed)))
        pool_ids = list(data.pool)
        while len(chosen) < hard_negatives:  # top up so every query has the same number of columns
            did = pool_ids[rng.randrange(len(pool_ids))]
            if did not in query.pos_cand_list and did not in chosen:
                chosen.append(did)
        negatives = [data.cand_segments(did) for did in chosen]
    return data.query_segments(query, instruction), data.cand_segments(positive), negatives


def make_embed_fn(backbone: Backbone, recipe: Recipe) -> Callable[[Sequence[list[Segment]]], torch.Tensor]:
    """Segments of a sub-batch -> pooled embeddings (with a graph when grad is enabled)."""
    max_text = max(8, recipe.max_length - TEMPLATE_TOKENS)

    def embed(batch: Sequence[list[Segment]]) -> torch.Tensor:
        conversations = [embedding_messages(backbone.truncate_segments(segments, max_text)) for segments in batch]
        # Under autocast, peft's cast of each LoRA input to the adapter's fp32 is undone at once by
        # the matmul's cast back to bf16: skipping both computes the same and saves two copies of
        # every activation per adapted layer (5% of a CPU step, benchmarks/train_step.py).
        with autocast(recipe, backbone.device), disable_input_dtype_casting(backbone.model, active=recipe.bf16):
            return embed_conversations(backbone, conversations)

    return embed


def trunk_features(backbone: Backbone, recipe: Recipe, items: Sequence[list[Segment]]) -> torch.Tensor | None:
    """The frozen vision trunk's mean-pooled features (N, 1280) of each item's first image: the global
    image token's features, served by the feature cache. None when some item has no image."""
    images = [next((s for s in segments if isinstance(s, Image.Image)), None) for segments in items]
    if not images or any(image is None for image in images):
        return None
    with torch.no_grad(), autocast(recipe, backbone.device):  # the cache keys the loop's precision
        features = backbone.feature_cache.get_many(backbone.hf_model, images)
    return features[:, 0]  # the global token: the mean of the whole map (the recipe requires it)


def contrastive_step_fn(
    backbone: Backbone, recipe: Recipe, example: Callable[[int, int], Example]
) -> Callable[[list[int], int], float]:
    """The Trainer's step: GradCache over this rank's shard (loss gathered over ranks). With
    ``trunk_distillation``, a batch whose queries and candidates all hold an image adds the
    similarity distillation from the frozen trunk (``losses.similarity_distillation``)."""
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's trunk features, set by step()

    def loss_fn(queries: torch.Tensor, candidates: torch.Tensor, negatives: torch.Tensor | None = None):
        loss = contrastive_loss_distributed(queries, candidates, temperature=recipe.temperature,
                                            hard_negatives=negatives, symmetric=recipe.symmetric_loss)
        if teacher is not None:
            loss = loss + recipe.trunk_distillation * similarity_distillation(
                queries, candidates, *teacher, recipe.temperature, recipe.trunk_distillation_temperature)
        return loss

    cache = GradCache(make_embed_fn(backbone, recipe), recipe.chunk_size, loss_fn)

    def step(indices: list[int], epoch: int) -> float:
        nonlocal teacher
        examples = [example(i, epoch) for i in indices]
        queries = [e[0] for e in examples]
        candidates = [e[1] for e in examples]
        if recipe.trunk_distillation:
            features = (trunk_features(backbone, recipe, queries), trunk_features(backbone, recipe, candidates))
            teacher = features if all(f is not None for f in features) else None
        if recipe.hard_negatives:
            negatives = [neg for e in examples for neg in e[2]]
            return float(cache.step(queries, candidates, negatives))
        return float(cache.step(queries, candidates))

    return step
