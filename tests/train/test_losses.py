"""InfoNCE (query -> candidate, cosine, temperature, hard negatives) and the next-token loss."""

import math

import pytest
import torch

from lamra.train.losses import count_target_tokens, info_nce, next_token_loss


def reference_info_nce(q, c, temperature, hard=None):
    """Written out row by row: -log softmax of the positive over [candidates, hard negatives]."""
    columns = [*c] + ([*hard.reshape(-1, hard.shape[-1])] if hard is not None else [])
    total = 0.0
    for i, query in enumerate(q):
        scores = [float(torch.dot(query, col) / (query.norm() * col.norm())) / temperature for col in columns]
        total += -scores[i] + math.log(sum(math.exp(s) for s in scores))
    return total / len(q)


def test_info_nce_matches_the_formula_and_is_one_directional():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(6, 8, dtype=torch.float64, generator=generator)
    c = torch.randn(6, 8, dtype=torch.float64, generator=generator)
    loss = info_nce(q, c, temperature=0.05)
    assert loss.item() == pytest.approx(reference_info_nce(q, c, 0.05), rel=1e-10)
    # Query -> candidate only: the candidate -> query direction is a different number.
    assert info_nce(c, q).item() != pytest.approx(loss.item(), rel=1e-6)
    assert reference_info_nce(c, q, 0.05) == pytest.approx(info_nce(c, q).item(), rel=1e-10)


def test_symmetric_info_nce_averages_both_directions_and_ignores_hard_negatives_backwards():
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(5, 8, dtype=torch.float64, generator=generator)
    c = torch.randn(5, 8, dtype=torch.float64, generator=generator)
    hard = torch.randn(5, 2, 8, dtype=torch.float64, generator=generator)
    expected = (reference_info_nce(q, c, 0.05, hard) + reference_info_nce(c, q, 0.05)) / 2
    assert info_nce(q, c, 0.05, hard, symmetric=True).item() == pytest.approx(expected, rel=1e-10)


def test_info_nce_normalises_its_inputs_and_uses_the_temperature():
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    c = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    scales = torch.rand(5, 1, dtype=torch.float64, generator=generator) * 10 + 0.1
    assert info_nce(q * scales, c, 0.1).item() == pytest.approx(info_nce(q, c, 0.1).item(), rel=1e-12)
    assert info_nce(q, c, 0.5).item() == pytest.approx(reference_info_nce(q, c, 0.5), rel=1e-10)
    # Identical pairs of orthogonal vectors: the positive wins by 1/tau, so the loss is tiny.
    eye = torch.eye(4, dtype=torch.float64)
    assert info_nce(eye, eye, 0.05).item() == pytest.approx(math.log(1 + 3 * math.exp(-20)), rel=1e-9)


def test_hard_negatives_are_extra_columns_in_either_shape():
    generator = torch.Generator().manual_seed(2)
    q, c = (torch.randn(4, 6, dtype=torch.float64, generator=generator) for _ in range(2))
    hard = torch.randn(4, 2, 6, dtype=torch.float64, generator=generator)
    loss = info_nce(q, c, 0.05, hard_negatives=hard)
    assert loss.item() == pytest.approx(reference_info_nce(q, c, 0.05, hard), rel=1e-10)
    assert info_nce(q, c, 0.05, hard_negatives=hard.reshape(8, 6)).item() == pytest.approx(loss.item(), rel=1e-12)
    assert loss.item() > info_nce(q, c, 0.05).item()  # more negatives, larger loss


def test_info_nce_gradients_and_bf16():
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(3, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    c = torch.randn(3, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    h = torch.randn(3, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, n: info_nce(a, b, 0.2, hard_negatives=n), (q, c, h))
    low = info_nce(q.detach().bfloat16(), c.detach().bfloat16())
    assert low.dtype == torch.float32  # softmax is not done in bf16
    assert low.item() == pytest.approx(info_nce(q.detach(), c.detach()).item(), rel=0.05)


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        info_nce(torch.randn(2, 3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="width"):
        info_nce(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(2, 4), torch.randn(2, 4), temperature=0)


def test_next_token_loss_shifts_and_ignores_masked_labels():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=generator)
    labels = torch.tensor([[-100, -100, 3, 1, -100], [-100, 6, 2, -100, -100]])
    # logits[b, t] predicts labels[b, t + 1]: counted pairs are (b0: t1->3, t2->1), (b1: t0->6, t1->2).
    pairs = [(0, 1, 3), (0, 2, 1), (1, 0, 6), (1, 1, 2)]
    expected = sum(-torch.log_softmax(logits[b, t], -1)[y].item() for b, t, y in pairs) / len(pairs)
    assert next_token_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_next_token_loss_without_answer_tokens_is_zero_and_differentiable():
    logits = torch.randn(2, 4, 9, requires_grad=True)
    loss = next_token_loss(logits, torch.full((2, 4), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="labels"):
        next_token_loss(logits, torch.zeros(2, 3, dtype=torch.long))


def test_summed_micro_batches_add_up_to_the_full_batch_mean():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 6, 5, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 5, (4, 6), generator=generator)
    labels[:, :3] = -100
    labels[0, 3:] = -100  # micro-batches with different answer lengths
    total = count_target_tokens(labels)
    assert total == 9  # rows 1-3, positions 3-5
    summed = sum(next_token_loss(logits[i : i + 2], labels[i : i + 2], reduction="sum") for i in (0, 2))
    assert (summed / total).item() == pytest.approx(next_token_loss(logits, labels).item(), rel=1e-12)


def test_similarity_distillation_is_zero_when_the_student_ranks_as_the_teacher_and_pulls_towards_it():
    from lamra.train.losses import similarity_distillation

    generator = torch.Generator().manual_seed(0)
    teacher_q, teacher_c = torch.randn(5, 12, generator=generator), torch.randn(5, 12, generator=generator)
    # Same cosines (the student is the teacher, scaled: widths may differ, norms do not matter).
    assert similarity_distillation(3 * teacher_q, teacher_c, teacher_q, teacher_c).item() == pytest.approx(0, abs=1e-6)
    student_q = torch.randn(5, 4, generator=generator, requires_grad=True)
    student_c = torch.randn(5, 4, generator=generator)
    first = similarity_distillation(student_q, student_c, teacher_q, teacher_c, teacher_temperature=0.1)
    assert first.item() > 0.01
    optimizer = torch.optim.SGD([student_q], lr=0.05)
    for _ in range(50):
        optimizer.zero_grad()
        similarity_distillation(student_q, student_c, teacher_q, teacher_c, teacher_temperature=0.1).backward()
        optimizer.step()
    assert similarity_distillation(student_q, student_c, teacher_q, teacher_c, teacher_temperature=0.1).item() < first.item() / 2
    with pytest.raises(ValueError, match="must pair"):
        similarity_distillation(student_q, student_c, teacher_q[:4], teacher_c)
