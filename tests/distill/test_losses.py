"""KD losses against hand computations, zero at identity, masking, and the all-masked batch."""

from __future__ import annotations

import math

import pytest
import torch

from lmshrink.distill import losses


def test_soft_target_kl_hand_computed():
    student = torch.tensor([[0.0, math.log(3.0)]])  # softmax at T=1: [0.25, 0.75]
    teacher = torch.tensor([[0.0, 0.0]])  # [0.5, 0.5]
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert losses.soft_target_kl(student, teacher, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)
    # at T = 2 the softened distributions are compared and the result is scaled by T**2
    s2 = torch.softmax(student / 2, -1)[0]
    expected_t2 = 4 * sum(0.5 * math.log(0.5 / p) for p in s2.tolist())
    assert losses.soft_target_kl(student, teacher, temperature=2.0).item() == pytest.approx(expected_t2, rel=1e-5)


def test_zero_at_identity_and_positive_otherwise():
    logits = torch.randn(4, 7, 11)
    mask = torch.ones(4, 7, dtype=torch.bool)
    assert losses.soft_target_kl(logits, logits, 3.0, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.soft_target_kl(logits + torch.randn_like(logits), logits, 3.0, mask).item() > 0
    hidden = torch.randn(4, 7, 16)
    assert losses.hidden_mse(hidden, hidden, mask=mask).item() == 0
    assert losses.cosine_hidden_loss(hidden, hidden, mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    attention = torch.softmax(torch.randn(4, 2, 7, 7), -1)
    assert losses.attention_kl(attention, attention, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_cosine_loss_hand_computed_with_mask():
    student = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]]])  # [B=1, S=3, H=2]
    teacher = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [-3.0, -4.0]]])
    # 1 - cos per position: orthogonal 1, 45 degrees 1 - 1/sqrt(2), opposite 2; the third position is padding
    mask = torch.tensor([[True, True, False]])
    expected = (1.0 + (1 - 1 / math.sqrt(2))) / 2
    assert losses.cosine_hidden_loss(student, teacher, mask=mask).item() == pytest.approx(expected, rel=1e-6)
    assert losses.cosine_hidden_loss(student, teacher).item() == pytest.approx((1 + 1 - 1 / math.sqrt(2) + 2) / 3)


def test_attention_kl_hand_computed_over_head_means():
    # [B=1, A=2, S=2, S=2]; head means: query 0 teacher [0.5, 0.5] vs student [0.75, 0.25]; query 1 equal
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]]]])
    student = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]])
    query0 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert losses.attention_kl(student, teacher).item() == pytest.approx(query0 / 2, rel=1e-5)
    assert losses.attention_kl(student, teacher, torch.tensor([[True, False]])).item() == pytest.approx(query0, rel=1e-5)


def test_kd_losses_stay_finite_with_masked_vocabulary():
    """-inf logits (a masked vocabulary entry, as generation constraints produce) must not turn the loss into NaN;
    the finite classes give the same KL as without the masked one (torchtune masks the same way)."""
    student = torch.tensor([[0.3, -1.0, 2.0, float("-inf")]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, -0.5, float("-inf")]])
    loss = losses.soft_target_kl(student, teacher, temperature=2.0)
    assert torch.isfinite(loss)
    expected = losses.soft_target_kl(student[:, :3], teacher[:, :3], temperature=2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(student.grad).all()
    values, indices = teacher.topk(4)
    topk = losses.topk_soft_target_kl(student, values, indices, temperature=2.0)
    assert torch.isfinite(topk) and topk.item() == pytest.approx(expected.item(), rel=1e-6)


def test_token_level_kl_ignores_padding():
    student, teacher = torch.randn(2, 5, 9), torch.randn(2, 5, 9)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    garbage = student.clone()
    garbage[0, 3:] = 1e4  # whatever sits at padded positions must not matter
    full = losses.soft_target_kl(student, teacher, 1.0, mask)
    assert losses.soft_target_kl(garbage, teacher, 1.0, mask).item() == pytest.approx(full.item(), rel=1e-6)
    per_position = torch.stack([losses.soft_target_kl(student[b, s][None], teacher[b, s][None], 1.0)
                                for b in range(2) for s in range(5) if mask[b, s]])
    assert full.item() == pytest.approx(per_position.mean().item(), rel=1e-5)


def test_all_masked_batch_is_zero_not_nan():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = losses.soft_target_kl(logits, torch.randn(3, 4), 2.0, torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_topk_kl_equals_full_kl_when_k_is_the_vocabulary():
    student, teacher = torch.randn(3, 6, 10), torch.randn(3, 6, 10)
    values, indices = teacher.topk(10, dim=-1)
    full = losses.soft_target_kl(student, teacher, 2.0)
    assert losses.topk_soft_target_kl(student, values, indices, 2.0).item() == pytest.approx(full.item(), rel=1e-5)
    values, indices = teacher.topk(3, dim=-1)
    assert losses.topk_soft_target_kl(student, values, indices, 2.0).item() > 0


def test_hidden_losses_with_projection_and_shape_error():
    student, teacher = torch.randn(2, 3, 8), torch.randn(2, 3, 16)
    projection = torch.nn.Linear(8, 16)
    expected = (projection(student) - teacher).pow(2).mean()
    assert losses.hidden_mse(student, teacher, projection).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="hidden shapes differ.*pass a projection"):
        losses.hidden_mse(student, teacher)
