"""LamRA-Rank: scoring retrieved candidates with the LMM, and fusing the scores with retrieval.

- Pointwise: the prompt shows the query and one candidate; the score is P("Yes") from a softmax over
  the {Yes, No} logits of the first answer token.
- Listwise: the candidates are numbered ``(1)..(n)``; the prompt ends at ``Ans: (`` and each
  candidate's score is the probability of its number (softmax over the numbers 1..n). The prompt
  holds at most ``window`` candidates (the paper trains lists of up to 5 and leaves longer ones
  open); a longer list is ordered by sliding windows, RankGPT's method: a window at the bottom of
  the list is ordered by its numbers' probabilities, then moves up by ``stride`` places, so a
  window's best candidates travel up with it, and the list's best reaches the top in one pass of
  ceil((n - window) / stride) + 1 prompts. Each candidate's score is then its place in that order
  (1 for the first, down to 1/n), since probabilities from different windows do not compare.
- Listwise parity: the official evaluation's rule instead, for comparing with its numbers: the model
  answers greedily and the candidate whose answer is exactly ``Ans: (k)`` scores 1, the rest 0.
- Fusion: final = retrieval score + w * rerank score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lamra.backbones.base import Backbone
from lamra.items import Segment
from lamra.prompts import (
    LISTWISE_ANSWER_PREFIX,
    MAX_RERANK_TEXT_TOKENS,
    NO,
    YES,
    listwise_messages,
    pointwise_messages,
)
from lamra.retriever import autocast_for

MAX_LISTWISE_WINDOW = 9  # "1".."9" are single tokens in both tokenizers; "10" is not
MAX_ANSWER_TOKENS = 8  # "Ans: (3)" is 5 tokens; a longer greedy answer cannot match anyway


def single_token_id(backbone: Backbone, text: str) -> int:
    ids = backbone.tokenize(text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not a single token for this tokenizer: {ids}")
    return ids[0]


def check_window(window: int) -> None:
    if not 1 <= window <= MAX_LISTWISE_WINDOW:
        raise ValueError(f"listwise window must be 1..{MAX_LISTWISE_WINDOW}, got {window}")


def sliding_window_order(count: int, window: int, stride: int, order_window) -> list[int]:
    """RankGPT's sliding windows over positions ``0..count-1``, bottom up: ``order_window(ids)``
    returns ``ids`` best first, and that window's stretch of the list is replaced by it."""
    if not 1 <= stride < window:
        raise ValueError(f"stride must be 1..window-1 (window {window}), got {stride}: "
                         "a window must overlap the next for its best to move up")
    order = list(range(count))
    start = max(0, count - window)
    while True:
        order[start : start + window] = order_window(order[start : start + window])
        if start == 0:
            return order
        start = max(0, start - stride)


class Reranker:
    """Scores (query, candidate) pairs with a backbone trained as LamRA-Rank."""

    def __init__(self, backbone: Backbone, precision: str = "auto", max_text_tokens: int = MAX_RERANK_TEXT_TOKENS):
        self.backbone = backbone
        self.precision = precision
        self.max_text_tokens = max_text_tokens
        self.yes_id = single_token_id(backbone, YES)
        self.no_id = single_token_id(backbone, NO)
        self.number_ids = [single_token_id(backbone, str(n)) for n in range(1, MAX_LISTWISE_WINDOW + 1)]
        tokenizer = backbone.tokenizer
        self.stop_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}

    def _cut(self, segments: list[Segment]) -> list[Segment]:
        return self.backbone.truncate_segments(segments, self.max_text_tokens)

    @torch.no_grad()
    def _next_token_logits(self, conversations, assistant_prefix: str = "") -> torch.Tensor:
        backbone = self.backbone
        inputs = backbone.build_inputs(
            conversations, add_generation_prompt=True, assistant_prefix=assistant_prefix, padding_side="left"
        )
        with autocast_for(backbone.device, self.precision, backbone.model):
            hidden = backbone.hidden_states(inputs)[:, -1]  # left padding: the last token is real
        return backbone.logits_at(hidden, fp32=True)  # bf16 logits would tie close P(Yes) scores

    @torch.no_grad()
    def pointwise(
        self, query: list[Segment], candidates: Sequence[list[Segment]], batch_size: int = 8,
        shared_prefix: bool | None = None,
    ) -> np.ndarray:
        """P("Yes") for each candidate, restricted to {Yes, No}. ``shared_prefix`` (default: when the
        backbone can) runs the query part of the prompt once for many candidates, packed with them
        into one sequence: the same scores, fewer tokens through the model."""
        if not candidates:
            return np.zeros(0, np.float32)
        query = self._cut(query)
        conversations = [pointwise_messages(query, self._cut(c)) for c in candidates]
        if shared_prefix is None:
            shared_prefix = hasattr(self.backbone, "last_hidden_with_shared_prefix")
        if shared_prefix:
            with autocast_for(self.backbone.device, self.precision, self.backbone.model):
                hidden = self.backbone.last_hidden_with_shared_prefix(conversations)
            logits = self.backbone.logits_at(hidden, fp32=True)
        else:
            logits = torch.cat([self._next_token_logits(conversations[start : start + batch_size])
                                for start in range(0, len(conversations), batch_size)])
        pair = logits[:, [self.yes_id, self.no_id]]
        return pair.softmax(dim=-1)[:, 0].cpu().numpy()

    def listwise(self, query: list[Segment], candidates: Sequence[list[Segment]], window: int = 5,
                 stride: int | None = None) -> np.ndarray:
        """Up to ``window`` candidates: each one's probability of being the answer. A longer list:
        sliding windows (``stride``, default half the window), each candidate scored by its place
        in the resulting order (module doc)."""
        check_window(window)
        if not candidates:
            return np.zeros(0, np.float32)
        query = self._cut(query)
        cut = [self._cut(c) for c in candidates]
        if len(cut) <= window:
            return self._window_probabilities(query, cut).cpu().numpy()

        def order_window(ids: list[int]) -> list[int]:
            probabilities = self._window_probabilities(query, [cut[i] for i in ids])
            return [ids[j] for j in torch.argsort(probabilities, descending=True, stable=True).tolist()]

        order = sliding_window_order(len(cut), window, stride or max(1, window // 2), order_window)
        scores = np.empty(len(cut), np.float32)
        scores[order] = (len(cut) - np.arange(len(cut))) / len(cut)
        return scores

    def _window_probabilities(self, query: list[Segment], chunk: list[list[Segment]]) -> torch.Tensor:
        logits = self._next_token_logits([listwise_messages(query, chunk)], LISTWISE_ANSWER_PREFIX)
        return logits[0, self.number_ids[: len(chunk)]].softmax(dim=-1)


    @torch.no_grad()
    def listwise_answer(self, query: list[Segment], candidates: Sequence[list[Segment]]) -> str:
        """The greedy answer to the listwise prompt, as the official evaluation generates it (from the
        generation prompt, up to the end of the turn; special tokens dropped)."""
        conversation = listwise_messages(self._cut(query), [self._cut(c) for c in candidates])
        generated: list[int] = []
        for _ in range(MAX_ANSWER_TOKENS):
            prefix = self.backbone.tokenizer.decode(generated)
            token = int(self._next_token_logits([conversation], prefix)[0].argmax())
            if token in self.stop_ids:
                break
            generated.append(token)
        return self.backbone.tokenizer.decode(generated, skip_special_tokens=True)

    def listwise_parity(self, query: list[Segment], candidates: Sequence[list[Segment]], window: int = 5) -> np.ndarray:
        """1 for the candidate a window's greedy answer names exactly (``Ans: (k)``), else 0; a window
        whose answer names none keeps all 0 (fused with retrieval scores, its order stays)."""
        check_window(window)
        scores = np.zeros(len(candidates), np.float32)
        for start in range(0, len(candidates), window):
            chunk = candidates[start : start + window]
            answer = self.listwise_answer(query, chunk)
            for k in range(1, len(chunk) + 1):
                if answer == f"{LISTWISE_ANSWER_PREFIX}{k})":
                    scores[start + k - 1] = 1.0
        return scores


def fuse(retrieval_scores: np.ndarray, rerank_scores: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """final = retrieval + w * rerank (the official fusion)."""
    return np.asarray(retrieval_scores, np.float32) + weight * np.asarray(rerank_scores, np.float32)
