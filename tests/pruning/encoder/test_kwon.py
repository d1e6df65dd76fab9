"""Kwon et al. against the spec (§7.2, 7.3, 7.8): budgets, identity at ratio 1, rearrangement keeps counts and
never raises the block-Fisher objective, mask tuning is ~1 when the teacher is the student, and the masked
result equals the sliced one (tuned scales folded)."""

from __future__ import annotations

import copy

import pytest
import torch

from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

from lmshrink.pruning.capture import capture, run_until_stop, sublayer_order
from lmshrink.pruning.encoder.arch import shape_of, sublayer_modules
from lmshrink.pruning.flops import FlopsBudget, encoder_flops
from lmshrink.pruning.encoder.kwon import block_objective, fisher_gradients, kwon, tune_masks
from lmshrink.pruning.least_squares import ridge_towards_one, scale_normal_equations
from lmshrink.pruning.settings import SCALE_LIMIT, KwonSettings
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


@torch.no_grad()
def mask_normal_equations(model, batches, teacher_masks, student_masks, sublayer, kept, faithful):
    """The reference: ``A^T A`` and ``A^T B`` of ``sublayer`` from two forwards from the embeddings that stop
    after it (teacher masks, student masks), as the tuning computed them before it kept each layer's inputs."""
    shape = shape_of(model)
    layer, kind = sublayer
    projection = sublayer_modules(model, sublayer)[0]
    weight, bias = projection.weight.detach().double(), projection.bias.detach().double()
    teacher_heads, teacher_neurons = teacher_masks
    if faithful and kind == "ffn":
        teacher_neurons = teacher_neurons.clone()
        teacher_neurons[layer] = 1
    gram = cross = 0
    for batch in batches:
        rows = batch["attention_mask"].bool()
        if kind == "ffn" and layer == shape.num_layers - 1:
            rows = torch.zeros_like(rows)
            rows[:, 0] = True
        with masked(model, teacher_heads, teacher_neurons), capture(model, [sublayer], sublayer,
                                                                    modules=sublayer_modules) as store:
            run_until_stop(model, batch)
        target = store[sublayer]["z"][rows].double()
        with masked(model, *student_masks), capture(model, [sublayer], sublayer, modules=sublayer_modules) as store:
            run_until_stop(model, batch)
        record = store[sublayer]
        target = target - bias - (record["z"] - record["proj"])[rows].double()
        batch_gram, batch_cross = scale_normal_equations(record["a"][rows], weight, kept,
                                                         shape.head_dim if kind == "mha" else 1, target,
                                                         ones_column=faithful and kind == "mha")
        gram, cross = gram + batch_gram, cross + batch_cross
    return gram, cross


@pytest.mark.parametrize("name", ["bert", "distilbert"])
@pytest.mark.parametrize("faithful", [False, True])
def test_tuning_from_kept_layer_inputs_equals_tuning_from_the_embeddings(name, faithful):
    """Keeping each layer's inputs (teacher's and student's) gives the same scales as two forwards from the
    embeddings per sublayer, on padded batches, in both modes (faithful's teacher FFN quirk included)."""
    torch.manual_seed(0)
    if name == "bert":
        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=64, num_labels=3, initializer_range=0.2)
        model = BertForSequenceClassification(config).eval()
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=100, dim=32, n_layers=4, n_heads=4, hidden_dim=64, num_labels=3, initializer_range=0.2)).eval()
    shape = shape_of(model)
    batches = sample(3)
    generator = torch.Generator().manual_seed(3)
    student = (torch.rand(4, 4, generator=generator) > 0.4).float(), (torch.rand(4, 64, generator=generator) > 0.5).float()
    teacher = (torch.maximum(student[0], (torch.rand(4, 4, generator=generator) > 0.5).float()),
               torch.maximum(student[1], (torch.rand(4, 64, generator=generator) > 0.5).float()))
    heads, neurons = student[0].clone(), student[1].clone()
    tuned, stopped = tune_masks(model, batches, teacher, heads, neurons, shape, faithful)
    expected_heads, expected_neurons = student[0].clone(), student[1].clone()
    expected_tuned, expected_stop = [], None
    for sublayer in sublayer_order(shape.num_layers):
        mask = expected_heads if sublayer[1] == "mha" else expected_neurons
        kept = mask[sublayer[0]].nonzero().flatten()
        if len(kept) == 0 or (faithful and sublayer == (0, "mha")):
            continue
        scales = ridge_towards_one(*mask_normal_equations(model, batches, teacher, (expected_heads, expected_neurons),
                                                          sublayer, kept, faithful))
        if faithful and sublayer[1] == "mha":
            scales = scales[:-1]
        if scales.abs().max() > SCALE_LIMIT:  # the abort rule
            expected_stop = sublayer
            break
        mask[sublayer[0], kept] *= scales.float()
        expected_tuned.append(sublayer)
    assert (tuned, stopped) == (expected_tuned, expected_stop) and len(tuned) >= 6, (tuned, stopped)
    assert not torch.equal(heads, student[0]) and not torch.equal(neurons, student[1])
    torch.testing.assert_close(heads, expected_heads, rtol=0, atol=1e-6)
    torch.testing.assert_close(neurons, expected_neurons, rtol=0, atol=1e-6)
