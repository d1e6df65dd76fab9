"""CPU dropout masks drawn 4 to a random number (lmshrink.dropout): the distribution, the scaling, the gradients,
and that a training forward takes every mask from them (hidden and attention dropout) and nothing else changes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

import lmshrink.dropout as fast
from lmshrink.dropout import attention_with_dropout, dropout, effective_p, fast_dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.02])
def test_every_lane_keeps_with_the_effective_probability(p):
    torch.manual_seed(0)
    count = 4 * 250_000
    kept = keep_mask((count,), p).view(-1, 4).double()
    expected = 1 - effective_p(p)
    tolerance = 5 * math.sqrt(expected * (1 - expected) / (count / 4))  # five standard errors, per lane
    for lane in range(4):
        assert abs(float(kept[:, lane].mean()) - expected) < tolerance, lane
    assert abs(effective_p(p) - p) <= 0.5 / 65536
    # neighbouring elements are independent: P(both kept) = P(kept)^2
    both = float((kept[:, 0] * kept[:, 1]).mean())
    assert abs(both - expected**2) < 5 * math.sqrt(expected**2 * (1 - expected**2) / (count / 4))


def test_masks_follow_the_seeded_generator():
    torch.manual_seed(3)
    first = keep_mask((7, 9), 0.3)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((7, 9), 0.3), first)
    assert not torch.equal(keep_mask((7, 9), 0.3), first)  # the generator moved on


def test_dropout_scales_kept_values_by_the_inverse_keep_probability_and_passes_their_gradient():
    torch.manual_seed(0)
    x = torch.rand(4000, dtype=torch.float64, requires_grad=True) + 0.5
    out = dropout(x, 0.25)
    kept = out != 0
    scale = 1 / (1 - effective_p(0.25))
    torch.testing.assert_close(out[kept], x[kept] * scale)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, kept.double() * scale)
    ones = dropout(torch.ones(1_000_000), 0.25)
    assert abs(float(ones.mean()) - 1) < 5 * math.sqrt(0.25 / 0.75 / 1_000_000)  # unbiased


def test_attention_dropout_is_the_math_kernel_with_the_drawn_mask(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 8, generator=generator) for _ in range(3))
    attn_mask = torch.zeros(2, 1, 5, 5)
    attn_mask[0, :, :, 3:] = -1e9
    mask = torch.rand(2, 3, 5, 5, generator=generator) > 0.3
    monkeypatch.setattr(fast, "keep_mask", lambda shape, p: mask)
    out = attention_with_dropout(query, key, value, attn_mask, 0.3, False, 0.5, False)
    weights = torch.softmax(query @ key.transpose(-1, -2) * 0.5 + attn_mask, dim=-1)
    expected = (weights * mask / (1 - effective_p(0.3))) @ value
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    return BertForSequenceClassification(config)


def test_a_training_forward_takes_every_mask_from_keep_mask_and_an_eval_forward_none(monkeypatch):
    model = tiny_bert().train()
    batch = {"input_ids": torch.randint(0, 50, (3, 6)), "attention_mask": torch.ones(3, 6, dtype=torch.long)}
    drawn = []
    original = fast.keep_mask
    monkeypatch.setattr(fast, "keep_mask", lambda shape, p: drawn.append((tuple(shape), p)) or original(shape, p))
    with fast_dropout():
        torch.manual_seed(1)
        first = model(**batch).logits
        torch.manual_seed(1)
        again = model(**batch).logits
    # embeddings, then per layer: attention weights, attention output, FFN output; then the classifier's input
    assert [shape for shape, _ in drawn[: len(drawn) // 2]] == [
        (3, 6, 16), (3, 2, 6, 6), (3, 6, 16), (3, 6, 16), (3, 2, 6, 6), (3, 6, 16), (3, 6, 16), (3, 16)]
    assert {p for _, p in drawn} == {0.2}
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # a function of the seed
    torch.manual_seed(1)
    assert not torch.allclose(model(**batch).logits, first)  # torch's own masks are other masks
    model.eval()
    drawn.clear()
    with fast_dropout():
        evaluated = model(**batch).logits
    assert drawn == [] and torch.equal(evaluated, model(**batch).logits)


def test_no_dropout_is_left_to_torch(monkeypatch):
    monkeypatch.setattr(fast, "keep_mask", lambda shape, p: pytest.fail("drew a mask"))
    x = torch.randn(4, 4)
    with fast_dropout():
        assert torch.equal(F.dropout(x, 0.0, True), x) and torch.equal(F.dropout(x, 0.5, False), x)
        torch.testing.assert_close(F.dropout(x, 1e-7, True), x)  # closer to 0 than the lanes resolve: PyTorch's
        assert torch.equal(F.dropout(x, 1 - 1e-7, True), torch.zeros_like(x))
        q = torch.randn(1, 2, 3, 4)
        torch.testing.assert_close(F.scaled_dot_product_attention(q, q, q), F.scaled_dot_product_attention(q, q, q))


@pytest.mark.slow
@pytest.mark.parametrize("distill", [False, True])
def test_teacher_and_distillation_fits_draw_their_training_masks_here(distill, tiny_bert_dir, tmp_path, monkeypatch):
    """Both training modules run their training steps in :func:`fast_dropout` (tiny_bert_dir has dropout 0.1),
    and their evaluation draws no mask."""
    from lmshrink.cli import main
    from tests.helpers import tiny_run_args

    drawn = []
    original = fast.keep_mask
    monkeypatch.setattr(fast, "keep_mask", lambda shape, p: drawn.append(p) or original(shape, p))
    main(["fit", *tiny_run_args(tiny_bert_dir, tmp_path, "--trainer.limit_val_batches=1",
                                "--trainer.limit_test_batches=0", train_batches=2, distill=distill)])
    layers = 1 if distill else 2  # the student keeps one layer
    assert len(drawn) == 2 * (1 + 3 * layers + 1) and set(drawn) == {0.1}


@pytest.mark.slow
def test_the_math_kernels_warning_about_a_given_mask_is_not_shown():
    """The kernel warns once per process, so a fresh one: a training forward, every warning shown."""
    import subprocess
    import sys

    code = ("import torch; from tests.test_dropout import tiny_bert; from lmshrink.dropout import fast_dropout\n"
            "model = tiny_bert().train()\n"
            "with fast_dropout():\n"
            "    model(input_ids=torch.randint(0, 50, (2, 5)), attention_mask=torch.ones(2, 5, dtype=torch.long))\n"
            "print('ran')")
    from tests.helpers import REPO

    done = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert "ran" in done.stdout, done.stderr[-2000:]
    assert "Dropout mask" not in done.stderr
