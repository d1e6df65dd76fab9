"""Kwon et al. against the spec (§7.2, 7.3, 7.8): budgets, identity at ratio 1, rearrangement keeps counts and
never raises the block-Fisher objective, mask tuning is ~1 when the teacher is the student, and the masked
result equals the sliced one (tuned scales folded)."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.pruning.encoder.arch import shape_of
from lmshrink.pruning.flops import FlopsBudget, encoder_flops
from lmshrink.pruning.encoder.kwon import block_objective, fisher_gradients, kwon, tune_masks
from lmshrink.pruning.settings import KwonSettings
from lmshrink.pruning.search import rearrange
from lmshrink.pruning.encoder.gates import masked
from lmshrink.pruning.encoder.slicing import slice_encoder
from tests.pruning.tiny import sample, tiny_encoders

SEQ_LEN = 10.0


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("ratio", [0.6, 0.25])
@pytest.mark.parametrize("faithful", [False, True])
def test_budget_weights_unchanged_and_masked_equals_sliced(name, ratio, faithful):
    model = tiny_encoders(initializer_range=0.5)[name]
    original = copy.deepcopy(model.state_dict())
    result = kwon(model, sample(labels=True), FlopsBudget(ratio, SEQ_LEN), KwonSettings(faithful=faithful))
    shape = shape_of(model)
    kept = encoder_flops(shape, SEQ_LEN, (result.head_mask != 0).sum(1).tolist(), (result.neuron_mask != 0).sum(1).tolist())
    assert kept <= ratio * encoder_flops(shape, SEQ_LEN) * (1 + 1e-9)
    assert all(torch.equal(value, original[key]) for key, value in model.state_dict().items())
    batch = sample(1, seed=7)[0]
    with masked(model, result.head_mask, result.neuron_mask):
        expected = model(**batch).logits
    sliced = slice_encoder(copy.deepcopy(model), result.head_mask, result.neuron_mask)
    # folding the tuned scales into the weights changes the fp32 rounding order: relative tolerance
    torch.testing.assert_close(sliced(**batch).logits, expected, rtol=1e-5, atol=1e-5)
    assert result.tuned_sublayers, "mask tuning should have run"


def test_identity_at_keep_ratio_one():
    model = tiny_encoders(initializer_range=0.5)["bert"]
    result = kwon(model, sample(labels=True), FlopsBudget(1.0, SEQ_LEN))
    assert torch.equal(result.head_mask, torch.ones_like(result.head_mask))
    assert torch.equal(result.neuron_mask, torch.ones_like(result.neuron_mask))


def test_mask_tuning_against_itself_gives_scales_of_one():
    """Teacher masks == student masks: every sublayer's target is already met, so every scale is ~1."""
    model = tiny_encoders(initializer_range=0.5)["roberta"]
    shape = shape_of(model)
    heads, neurons = torch.ones(2, 4), torch.ones(2, 64)
    heads[0, 1], neurons[1, :20] = 0, 0
    student_heads, student_neurons = heads.clone(), neurons.clone()
    tuned, stopped = tune_masks(model, sample(), (heads, neurons), student_heads, student_neurons, shape, False)
    assert stopped is None and len(tuned) == 4
    torch.testing.assert_close(student_heads, heads, rtol=0, atol=1e-4)
    torch.testing.assert_close(student_neurons, neurons, rtol=0, atol=1e-4)


def test_a_layer_with_a_single_unit_is_tuned():
    """The official helper crashes on one unknown; ours solves it."""
    model = tiny_encoders(initializer_range=0.5)["bert"]
    heads, neurons = torch.ones(2, 4), torch.ones(2, 64)
    student_heads = heads.clone()
    student_heads[1, 1:] = 0
    tuned, _ = tune_masks(model, sample(), (heads, neurons), student_heads, neurons.clone(), shape_of(model), False)
    assert (1, "mha") in tuned and student_heads[1, 0] != 1


@pytest.mark.parametrize("seed", range(5))
def test_rearrangement_keeps_counts_and_lowers_block_objective(seed):
    generator = torch.Generator().manual_seed(seed)
    gradients = torch.randn(16, 30, generator=generator)
    diagonal = gradients.pow(2).sum(0)
    keep = torch.ones(30, dtype=torch.bool)
    keep[torch.argsort(diagonal)[:12]] = False  # the diagonal choice: prune the 12 least important
    new_keep = rearrange(gradients, keep)
    assert int((~new_keep).sum()) == 12
    assert block_objective(gradients, new_keep) <= block_objective(gradients, keep) + 1e-9


def test_fisher_gradients_match_a_manual_head_gate():
    """The gradient w.r.t. a head's gate equals d loss / d alpha with the head's O columns scaled by alpha."""
    model = tiny_encoders(initializer_range=0.5)["bert"]
    batches = sample(1, labels=True)
    head_grads, _ = fisher_gradients(model, batches)
    alpha = torch.ones((), requires_grad=True)
    weight = model.bert.encoder.layer[1].attention.output.dense.weight
    original = weight.detach().clone()
    scale = torch.ones(32)
    model.bert.encoder.layer[1].attention.output.dense.weight = None
    del model.bert.encoder.layer[1].attention.output.dense.weight
    scale_vector = torch.cat([scale[:8], alpha.expand(8), scale[16:]])
    model.bert.encoder.layer[1].attention.output.dense.weight = original * scale_vector
    loss = model(**batches[0]).loss
    (manual,) = torch.autograd.grad(loss, alpha)
    torch.testing.assert_close(head_grads[0, 1, 1], manual, rtol=1e-4, atol=1e-7)
