"""LamRA-Rank training samples and the next-token step shared with stage 0.

From each mined query (``lamra train mine``) three samples, with the official prompt strings:

- pointwise positive: (query, a positive) -> "Yes"
- pointwise negative: (query, a mined non-positive from its top-K) -> "No"
- listwise: the positive and n-1 mined non-positives (n drawn from [listwise_min, listwise_max]),
  the positive at a random place k, -> "Ans: (k)"

Draws use a generator seeded by (seed, epoch, qid, kind). Only the answer tokens are supervised
(``Backbone.build_training_inputs``). Sample index i is query i // 3, kind i % 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lamra.backbones.base import IGNORE_INDEX, Backbone
from lamra.data.mbeir import MBEIRQuery
from lamra.items import Segment
from lamra.prompts import MAX_RERANK_TEXT_TOKENS, NO, YES, listwise_messages, pointwise_messages
from lamra.train.distributed import is_distributed
from lamra.train.recipe import Recipe
from lamra.train.stages.mbeir_data import MBEIRTrainData
from lamra.train.stages.models import StageSetupError
from lamra.train.trainer import autocast

KINDS = ("pointwise_positive", "pointwise_negative", "listwise")
PROMPT_TOKENS = 128  # the rerank instruction and template, left out of the per-text budget


class RerankSamples:
    """The rank stage's training samples over the queries that were mined."""

    def __init__(self, data: MBEIRTrainData, mined: dict[str, dict], recipe: Recipe, backbone: Backbone):
        self.data = data
        self.recipe = recipe
        self.backbone = backbone  # its tokenizer cuts the texts
        self.queries: list[MBEIRQuery] = []
        self.negatives: dict[str, list[str]] = {}
        for query in data.queries:
            record = mined.get(query.qid)
            if record is None:
                continue
            positives = set(query.pos_cand_list) | set(record.get("gt_docs", []))
            negatives = [did for did in record["top_docs"][: recipe.mining_top_k]
                         if did not in positives and did in data.pool]
            if negatives:
                self.queries.append(query)
                self.negatives[query.qid] = negatives
        if not self.queries:
            raise StageSetupError("no training query has a mined non-positive: check rerank_data and train_data")

    def __len__(self) -> int:
        return 3 * len(self.queries)

    def _cut(self, segments: list[Segment], items: int) -> list[Segment]:
        budget = max(8, min(MAX_RERANK_TEXT_TOKENS, (self.recipe.max_length - PROMPT_TOKENS) // items))
        return self.backbone.truncate_segments(segments, budget)

    def sample(self, index: int, epoch: int) -> list[dict]:
        """The training conversation of sample ``index`` (ends with the assistant's answer)."""
        query = self.queries[index // 3]
        kind = KINDS[index % 3]
        data = self.data
        rng = data.rng_for(query, epoch, kind)
        positive = rng.choice(data.positives(query))
        instruction = data.instruction(query, data.pool[positive].modality, rng)
        query_segments = data.query_segments(query, instruction)
        negatives = self.negatives[query.qid]
        if kind == "pointwise_positive":
            return pointwise_messages(self._cut(query_segments, 2), self._cut(data.cand_segments(positive), 2), YES)
        if kind == "pointwise_negative":
            negative = rng.choice(negatives)
            return pointwise_messages(self._cut(query_segments, 2), self._cut(data.cand_segments(negative), 2), NO)
        low, high = self.recipe.listwise_min_candidates, self.recipe.listwise_max_candidates
        count = min(rng.randint(low, high), len(negatives) + 1)
        chosen = rng.sample(negatives, count - 1)
        answer = rng.randrange(count)  # 0-based place of the positive
        chosen.insert(answer, positive)
        candidates = [self._cut(data.cand_segments(did), count + 1) for did in chosen]
        return listwise_messages(self._cut(query_segments, count + 1), candidates, answer + 1)


def chance_loss(backbone: Backbone, recipe: Recipe) -> float:
    """The loss of a reranker that has learned the answer format and the share of "Yes", but not the
    match: ln 2 for each pointwise answer, the mean ln n over listwise sizes n, divided by all the
    supervised tokens of a query's three samples (format tokens cost it nothing). A run whose loss
    settles here has learned nothing that reorders a list; the shipped CPU rerankers settled at
    0.26-0.29 against 0.258. Assumes enough mined negatives for the largest list."""

    def supervised(conversation: list[dict]) -> int:
        labels = backbone.build_training_inputs([conversation])["labels"]
        return int((labels[:, 1:] != IGNORE_INDEX).sum())

    sizes = range(recipe.listwise_min_candidates, recipe.listwise_max_candidates + 1)
    pointwise_tokens = supervised(pointwise_messages(["q"], ["c"], YES)) + supervised(pointwise_messages(["q"], ["c"], NO))
    listwise_tokens = sum(supervised(listwise_messages(["q"], [["c"]] * n, n)) for n in sizes) / len(sizes)
    informative = 2 * math.log(2) + sum(math.log(n) for n in sizes) / len(sizes)
    return informative / (pointwise_tokens + listwise_tokens)


def answer_token_loss(backbone: Backbone, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the supervised tokens only.

    Equal to ``next_token_loss(backbone.logits_at(hidden), labels, reduction="sum")``, but the
    vocabulary projection runs only at the positions that predict an answer token.
    """
    labels = labels.to(hidden.device)
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    if not bool(mask.any()):
        return hidden.sum() * 0.0
    logits = backbone.logits_at(hidden[:, :-1][mask])
    return F.cross_entropy(logits.float(), targets[mask], reduction="sum")


def next_token_step_fn(
    backbone: Backbone, recipe: Recipe, conversation: Callable[[int, int], list[dict]]
) -> Callable[[list[int], int], float]:
    """The Trainer's step for next-token stages: micro-batches of ``chunk_size`` conversations,
    each loss summed and divided by the global number of answer tokens (so micro-batches and
    processes add up to the full-batch mean; the Trainer sums gradients over ranks)."""

    def step(indices: list[int], epoch: int) -> float:
        conversations = [conversation(i, epoch) for i in indices]
        size = recipe.chunk_size or len(conversations)
        batches = [backbone.build_training_inputs(conversations[s : s + size]) for s in range(0, len(conversations), size)]
        tokens = torch.tensor(float(sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)))
        if is_distributed():
            dist.all_reduce(tokens)
        total = 0.0
        for batch in batches:
            labels = batch.pop("labels")
            with autocast(recipe, backbone.device):
                hidden = backbone.hidden_states(batch)
                loss = answer_token_loss(backbone, hidden, labels) / tokens.clamp(min=1.0)
            loss.backward()
            total += float(loss.detach())
        return total

    return step
