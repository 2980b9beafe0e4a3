"""Training losses: InfoNCE for LamRA-Ret, next-token cross-entropy for LamRA-Rank and stage 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lamra.backbones.base import IGNORE_INDEX  # the label of tokens that carry no loss

DEFAULT_TEMPERATURE = 0.05


def similarity_logits(
    query_emb: torch.Tensor,
    cand_emb: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    hard_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cosine similarities / temperature, shape [B, N (+ H)].

    Column j < N is candidate j (the positive of query j sits on the diagonal); hard negatives,
    when given, are appended as extra columns shared by every query, as in the official code.
    """
    if query_emb.dim() != 2 or cand_emb.dim() != 2:
        raise ValueError(
            f"info_nce expects 2-D embeddings [batch, dim], got query {tuple(query_emb.shape)} "
            f"and candidate {tuple(cand_emb.shape)}"
        )
    if query_emb.shape[0] > cand_emb.shape[0] or query_emb.shape[1] != cand_emb.shape[1]:
        raise ValueError(
            f"info_nce needs one positive candidate per query with the same width: query "
            f"{tuple(query_emb.shape)}, candidate {tuple(cand_emb.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    columns = cand_emb
    if hard_negatives is not None:
        # [B, H, D] and [B*H, D] are the same pool of extra columns.
        hard_negatives = hard_negatives.reshape(-1, hard_negatives.shape[-1])
        if hard_negatives.shape[-1] != query_emb.shape[-1]:
            raise ValueError(
                f"hard negatives have width {hard_negatives.shape[-1]}, queries {query_emb.shape[-1]}"
            )
        columns = torch.cat([cand_emb, hard_negatives], dim=0)
    query = F.normalize(_at_least_float32(query_emb), dim=-1)
    columns = F.normalize(_at_least_float32(columns), dim=-1)
    return query @ columns.T / temperature


def info_nce(
    query_emb: torch.Tensor,
    cand_emb: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    hard_negatives: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE from query to candidate (one direction, as the official LamRA code).

    Query i's positive is candidate i; the other candidates of the batch are its negatives, and
    hard negatives ([B, H, D] or [B*H, D]) are extra negative columns for every query.
    Inputs are L2-normalised here, so raw hidden states can be passed.

    ``symmetric=True`` averages it with the candidate-to-query direction (CLIP's loss: candidate i
    against the batch's queries). The compact recipes use it: every candidate then gets a gradient
    that pushes it away from the other queries, which a projector trained from scratch needs.
    """
    logits = similarity_logits(query_emb, cand_emb, temperature, hard_negatives)
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = (loss + F.cross_entropy(logits[:, : logits.shape[0]].T, targets)) / 2
    return loss


def similarity_distillation(
    query_emb: torch.Tensor,
    cand_emb: torch.Tensor,
    teacher_query: torch.Tensor,
    teacher_cand: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    teacher_temperature: float = DEFAULT_TEMPERATURE,
) -> torch.Tensor:
    """KL(teacher || student) between each query's softmax over the batch's candidates, the teacher's
    from its own cosines (e.g. a frozen vision trunk's features), the student's from the embeddings'.

    Relational distillation: the student keeps the teacher's sense of which candidates look alike,
    not its vectors, so the two may differ in width. All inputs are L2-normalised here; rows are
    paired (teacher row i describes query i / candidate i).
    """
    if teacher_query.shape[0] != query_emb.shape[0] or teacher_cand.shape[0] != cand_emb.shape[0]:
        raise ValueError(
            f"teacher rows ({teacher_query.shape[0]} queries, {teacher_cand.shape[0]} candidates) must pair "
            f"with the student's ({query_emb.shape[0]}, {cand_emb.shape[0]})"
        )
    student = similarity_logits(query_emb, cand_emb, temperature).log_softmax(dim=-1)
    with torch.no_grad():
        teacher = similarity_logits(teacher_query, teacher_cand, teacher_temperature).log_softmax(dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def next_token_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
) -> torch.Tensor:
    """Causal-LM cross-entropy: logits[:, t] predicts labels[:, t + 1]; `ignore_index` is skipped.

    `labels` are aligned with the input ids (Hugging Face convention), with -100 on prompt and
    padding tokens so only the answer tokens count. "mean" averages over counted tokens;
    "sum" lets gradient accumulation divide by the whole batch's `count_target_tokens` so
    micro-batches add up to exactly the full-batch mean. A batch with no counted token gives a
    zero that still carries a graph (so backward and DDP keep working).
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"next_token_loss expects logits [B, T, V] and labels [B, T], got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    shifted_logits = _at_least_float32(logits[:, :-1].reshape(-1, logits.shape[-1]))
    shifted_labels = labels[:, 1:].reshape(-1)
    if not bool((shifted_labels != ignore_index).any()):
        return shifted_logits.sum() * 0.0
    return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=ignore_index, reduction=reduction)


def count_target_tokens(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """How many tokens `next_token_loss` counts for these labels."""
    return int((labels[:, 1:] != ignore_index).sum())


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    # Softmax over bf16 logits (cosine / 0.05 spans +-20) loses too much precision; keep float64.
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor
