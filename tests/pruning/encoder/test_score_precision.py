"""Pruning's gradient passes in bf16 (a ``bf16-mixed`` run): K-prune's scores and Kwon et al.'s Fisher gradients
rank units from bf16 arithmetic, while everything the spec fits (KPWT's normal equations) stays float32."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.pruning.encoder.kprune import KPruneSettings, measure_sublayer, teacher_soft_labels
from lmshrink.pruning.encoder.kwon import fisher_gradients
from lmshrink.pruning.encoder.run import prune_encoder
from lmshrink.pruning.methods import KPrune, L1Heads
from lmshrink.pruning.score_precision import score_precision_of, scoring
from tests.pruning.tiny import sample, tiny_encoders


def measure(model, precision: str):
    """One K-prune measurement pass of (MHA 0) with nothing pruned, its scores and normal equations."""
    settings = KPruneSettings()
    batches = sample()
    probs = teacher_soft_labels(model, batches, settings.temperature, precision)
    keep_heads = torch.ones(2, 4, dtype=torch.bool)
    keep_neurons = torch.ones(2, 64, dtype=torch.bool)
    return measure_sublayer(model, copy.deepcopy(model), batches, probs, keep_heads, keep_neurons, (0, "mha"),
                            settings, 10.0, score_precision=precision)


@pytest.mark.parametrize("name", ["bert", "distilbert"])
def test_kprune_bf16_scores_rank_like_float32_and_kpwt_fits_float32_captures(name):
    model = tiny_encoders(initializer_range=0.5)[name]
    head32, neuron32, problem32, tokens32 = measure(model, "32")
    head16, neuron16, problem16, tokens16 = measure(model, "bf16")
    assert tokens16 == tokens32
    assert not torch.equal(neuron16, neuron32)  # the scoring pass did run in bf16
    for low, high in ((head16, head32), (neuron16, neuron32)):
        torch.testing.assert_close(low, high, rtol=0.1, atol=1e-3 * float(high.abs().max()))
        correlation = torch.corrcoef(torch.stack([low.flatten(), high.flatten()]))[0, 1]
        assert correlation > 0.99
    # KPWT's inputs come from a float32 forward: the same normal equations as a float32 run, to the bit
    torch.testing.assert_close(problem16.gram, problem32.gram, rtol=0, atol=0)
    torch.testing.assert_close(problem16.cross, problem32.cross, rtol=0, atol=0)


def test_kwon_bf16_fisher_gradients_are_close_to_float32():
    model = tiny_encoders(initializer_range=0.5)["bert"]
    batches = sample(2, labels=True)
    heads32, neurons32 = fisher_gradients(model, batches, "32")
    heads16, neurons16 = fisher_gradients(model, batches, "bf16")
    assert heads16.dtype == torch.float32 and not torch.equal(neurons16, neurons32)
    for low, high in ((heads16, heads32), (neurons16, neurons32)):
        torch.testing.assert_close(low, high, rtol=0.1, atol=0.05 * float(high.abs().max()))


def test_the_record_says_the_score_precision_and_magnitude_runs_have_none():
    model = tiny_encoders(initializer_range=0.5)["bert"]
    kprune = prune_encoder(copy.deepcopy(model), sample(), KPrune(0.5, num_tokens=100), 10.0, "bf16").record
    magnitude = prune_encoder(copy.deepcopy(model), [], L1Heads(0.5), 10.0, "bf16").record
    assert kprune["score_precision"] == "bf16" and magnitude["score_precision"] is None


def test_a_run_precision_gives_its_score_precision():
    assert [score_precision_of(precision) for precision in ("bf16-mixed", "bf16-true", "32-true", "16-mixed", None)] \
        == ["bf16", "bf16", "32", "32", "32"]


def test_scoring_runs_matrix_products_in_bf16_with_the_math_attention_backend():
    layer = torch.nn.Linear(4, 4)
    with scoring("bf16", "cpu"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
    with scoring("32", "cpu"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32
    with pytest.raises(ValueError, match="score precision 'fp8'"):
        with scoring("fp8", "cpu"):
            pass


@pytest.mark.parametrize("labels_precision, vanishes", [("bf16", True), ("32", False)])
def test_predictive_term_vanishes_in_bf16_when_the_teacher_labels_are_bf16_too(labels_precision, vanishes):
    """Spec §7.11 in a bf16 run: the unpruned student's KD gradient is ~0 against teacher labels of the same
    precision; against float32 labels it would be the gradient of bf16 rounding (what the labels' precision
    avoids)."""
    from lmshrink.distill.losses import soft_target_kl_from_probs
    from lmshrink.pruning.encoder.gates import full_masks, masked

    model = tiny_encoders(initializer_range=0.5)["bert"]
    batch = sample(1)[0]
    probs = teacher_soft_labels(model, [batch], 2.0, labels_precision)[0]
    heads, neurons = (mask.requires_grad_(True) for mask in full_masks(model))
    with masked(model, heads, neurons), scoring("bf16", "cpu"):
        loss = soft_target_kl_from_probs(model(**batch).logits, probs, 2.0)
        largest = max(float(grad.abs().max()) for grad in torch.autograd.grad(loss, [heads, neurons]))
    assert (largest < 1e-6) == vanishes, largest


def test_kprune_asks_for_the_teachers_labels_in_its_score_precision(monkeypatch):
    import lmshrink.pruning.encoder.kprune as kprune_module

    asked = []
    labels = kprune_module.teacher_soft_labels
    monkeypatch.setattr(kprune_module, "teacher_soft_labels",
                        lambda *args: asked.append(args[3] if len(args) > 3 else "32") or labels(*args))
    model = tiny_encoders(initializer_range=0.5)["bert"]
    prune_encoder(copy.deepcopy(model), sample(), KPrune(0.5, num_tokens=100), 10.0, "bf16")
    assert asked == ["bf16"]
