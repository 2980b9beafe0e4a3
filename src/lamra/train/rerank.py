"""LamRA-Rank training samples and the next-token step shared with stage 0.

From each mined query (``lamra train mine``) three samples, with the official prompt strings:

- pointwise positive: (query, a positive) -> "Yes"
- pointwise negative: (query, a mined non-positive from its top-K) -> "No"
- listwise: the positive and n-1 mined non-positives (n drawn from [listwise_min, listwise_max]),
  the positive at a random place k, -> "Ans: (k)"

Draws use a generator seeded by (seed, epoch, qid, kind). Only the answer tokens are supervised
(``Backbone.build_training_inputs``). Sample index i is query i // 3, kind i % 3.

``rank_loss: grouped`` (compact recipes) trains the same pointwise prompts as a group instead: a
query's positive and ``rank_group_size - 1`` of its mined non-positives, each scored by its "Yes"
minus "No" logit (the score the pointwise reranker reads), with a softmax cross-entropy over the
group that puts the positive first, plus each prompt's own Yes/No cross-entropy (the next-token loss
restricted to those two answers, which keeps P("Yes") meaningful), plus the query's listwise sample
under the next-token loss. Why: on the next-token loss a pointwise answer is judged alone, and a
reranker that answers at the base rate of "Yes" loses almost nothing (``chance_loss``); the compact
rerankers settled there and could not even fit 48 training queries in 69 steps. The group loss is
paid only by ordering the query's own candidates, the thing reranking is for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from lamra.backbones.base import IGNORE_INDEX, Backbone
from lamra.data.mbeir import MBEIRQuery
from lamra.items import Segment
from lamra.prompts import MAX_RERANK_TEXT_TOKENS, NO, YES, listwise_messages, pointwise_messages
from lamra.reranker import single_token_id
from lamra.train.distributed import is_distributed, is_main_process
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
        kind = KINDS[index % 3]
        data = self.data
        rng, positive, query_segments, negatives = self._draw(index // 3, epoch, kind)
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

    def group(self, query_index: int, epoch: int) -> list[list[dict]]:
        """Pointwise prompts (no answer) of the query's positive, first, then up to
        ``rank_group_size - 1`` mined non-positives drawn without replacement."""
        rng, positive, query_segments, negatives = self._draw(query_index, epoch, "group")
        chosen = [positive, *rng.sample(negatives, min(self.recipe.rank_group_size - 1, len(negatives)))]
        query_segments = self._cut(query_segments, 2)
        return [pointwise_messages(query_segments, self._cut(self.data.cand_segments(did), 2)) for did in chosen]

    def _draw(self, query_index: int, epoch: int, purpose: str):
        """A sample's seeded generator (by epoch, query and ``purpose``), after it has drawn the
        positive and the instruction; the query's segments; its mined non-positives."""
        query = self.queries[query_index]
        data = self.data
        rng = data.rng_for(query, epoch, purpose)
        positive = rng.choice(data.positives(query))
        instruction = data.instruction(query, data.pool[positive].modality, rng)
        return rng, positive, data.query_segments(query, instruction), self.negatives[query.qid]


def chance_loss(backbone: Backbone, recipe: Recipe) -> float:
    """The loss of a reranker that has learned the answer format and the share of "Yes", but not the
    match. Next-token loss: ln 2 for each pointwise answer, the mean ln n over listwise sizes n,
    divided by all the supervised tokens of a query's three samples (format tokens cost it nothing);
    the shipped CPU rerankers settled at 0.26-0.29 against 0.258. Grouped loss: ln G for the group's
    softmax, the binary entropy of 1/G for its Yes/No answers, and the listwise sample's ln n over
    its tokens. A run whose loss settles here has learned nothing that reorders a list. Assumes
    enough mined negatives for the largest list and group."""

    def supervised(conversation: list[dict]) -> int:
        labels = backbone.build_training_inputs([conversation])["labels"]
        return int((labels[:, 1:] != IGNORE_INDEX).sum())

    sizes = range(recipe.listwise_min_candidates, recipe.listwise_max_candidates + 1)
    listwise_tokens = {n: supervised(listwise_messages(["q"], [["c"]] * n, n)) for n in sizes}
    if recipe.rank_loss == "grouped":
        share = 1.0 / recipe.rank_group_size
        answers = -(share * math.log(share) + (1 - share) * math.log(1 - share))
        listwise = sum(math.log(n) / listwise_tokens[n] for n in sizes) / len(sizes)
        return math.log(recipe.rank_group_size) + answers + listwise
    pointwise_tokens = supervised(pointwise_messages(["q"], ["c"], YES)) + supervised(pointwise_messages(["q"], ["c"], NO))
    informative = 2 * math.log(2) + sum(math.log(n) for n in sizes) / len(sizes)
    return informative / (pointwise_tokens + sum(listwise_tokens.values()) / len(sizes))


def announce_chance_loss(backbone: Backbone, recipe: Recipe, samples: RerankSamples, prefix: str = "rank") -> None:
    """Print, once, the loss that marks a reranker which has learned only the answer format, so a
    run's curve can be read against it."""
    if is_main_process():
        tqdm.write(f"{prefix}: {len(samples.queries)} mined queries; a reranker that knows only the answer format "
                   f"scores loss {chance_loss(backbone, recipe):.3f} on them; below it, it is learning the match")


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
    backbone: Backbone, recipe: Recipe, conversation: Callable[[int, int], list[dict]], weight: float = 1.0
) -> Callable[[list[int], int], float]:
    """The Trainer's step for next-token stages: micro-batches of ``chunk_size`` conversations,
    each loss summed and divided by the global number of answer tokens (so micro-batches and
    processes add up to the full-batch mean; the Trainer sums gradients over ranks). ``weight``
    scales the loss (and its gradients) when it is one term of a joint loss."""

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
                loss = weight * answer_token_loss(backbone, hidden, labels) / tokens.clamp(min=1.0)
            loss.backward()
            total += float(loss.detach())
        return total

    return step


def grouped_step_fn(backbone: Backbone, recipe: Recipe, samples: RerankSamples) -> Callable[[list[int], int], float]:
    """The Trainer's step for ``rank_loss: grouped`` (module doc); example i is query i, and
    ``chunk_size`` queries go through the model at once. Each query's three terms are summed and
    divided by the global number of queries in the batch, so micro-batches and processes add up to
    the batch mean, as the next-token step's do."""
    yes_id, no_id = (single_token_id(backbone, answer) for answer in (YES, NO))

    def chunk_loss(query_indices: list[int], epoch: int) -> torch.Tensor:
        groups = [samples.group(index, epoch) for index in query_indices]
        inputs = backbone.build_inputs([c for group in groups for c in group], add_generation_prompt=True,
                                       padding_side="left")
        listwise = backbone.build_training_inputs([samples.sample(3 * index + 2, epoch) for index in query_indices])
        labels = listwise.pop("labels")
        with autocast(recipe, backbone.device):
            logits = backbone.logits_at(backbone.hidden_states(inputs)[:, -1], fp32=True)
            listwise_hidden = backbone.hidden_states(listwise)
        answer_tokens = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1).clamp(min=1)
        listwise_loss = sum(answer_token_loss(backbone, listwise_hidden[row : row + 1], labels[row : row + 1])
                            / answer_tokens[row] for row in range(len(query_indices)))
        scores = (logits[:, yes_id] - logits[:, no_id]).split([len(group) for group in groups])
        first = torch.zeros(1, dtype=torch.long, device=logits.device)
        total = listwise_loss
        for group_scores in scores:  # the positive is each group's first prompt
            answers = (torch.arange(len(group_scores), device=logits.device) == 0).float()
            total = total + F.cross_entropy(group_scores[None], first)
            total = total + F.binary_cross_entropy_with_logits(group_scores, answers)
        return total

    def step(indices: list[int], epoch: int) -> float:
        count = torch.tensor(float(len(indices)))
        if is_distributed():
            dist.all_reduce(count)
        size = recipe.chunk_size or len(indices)
        total = 0.0
        for start in range(0, len(indices), size):
            loss = chunk_loss(indices[start : start + size], epoch) / count
            loss.backward()
            total += float(loss.detach())
        return total

    return step
