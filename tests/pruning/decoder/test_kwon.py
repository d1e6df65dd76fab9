"""Kwon et al. on a tiny grouped-query Llama: Fisher gradients, budget with one group per layer, masked == sliced,
identity at 1, mask tuning never worse per sublayer and equal to tuning from whole forwards, dead units pruned
first."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from lmshrink.pruning.decoder import kwon as decoder_kwon_module
from lmshrink.pruning.capture import capture, run_until_stop
from lmshrink.pruning.decoder.kwon import (
    decoder_kwon,
    decoder_kwon_search,
    fisher_gradients,
    sequences,
    tune_decoder_masks,
)
from lmshrink.pruning.decoder.structure import (
    channel_flops,
    decoder_flops,
    decoder_masked,
    decoder_modules,
    decoder_shape,
    group_flops,
    projection_of,
    sublayer_targets,
)
from lmshrink.pruning.settings import SCALE_LIMIT, KwonSettings
from lmshrink.pruning.least_squares import ridge_towards_one, scale_normal_equations
from tests.pruning.decoder.test_kprune import SEQ_LEN, assert_sliced_equals_masked, windows
from tests.pruning.decoder.test_structure import tiny_llama


def test_fisher_gradient_is_the_derivative_of_the_next_token_loss_in_a_gate():
    """Central finite difference of the mean next-token cross-entropy over the positions t where t and t + 1 are
    not padding, in one group gate and one channel gate, the model in float64 throughout (Llama's RMSNorm casts
    to float32; here it is replaced by the same formula in float64)."""
    model = tiny_llama().double()
    for norm in [module for module in model.modules() if isinstance(module, LlamaRMSNorm)]:
        norm.forward = lambda hidden, norm=norm: norm.weight * hidden * torch.rsqrt(
            hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    batch = windows(1)[0]
    group_grads, channel_grads = fisher_gradients(model, [batch])
    assert group_grads.shape == (8, 2, 2) and channel_grads.shape == (8, 2, 48)
    sequence = sequences([batch])[0]  # the first one: left padding on 2 tokens
    mask = sequence["attention_mask"][0].bool()
    scored = mask[:-1] & mask[1:]
    shape, eps = decoder_shape(model), 1e-6

    def loss(groups, channels):
        with torch.no_grad(), decoder_masked(model, groups, channels):
            logits = model(**sequence).logits
        return float(torch.nn.functional.cross_entropy(logits[0, :-1][scored], sequence["input_ids"][0, 1:][scored]))

    for which, (layer, unit), grads in (("group", (1, 0), group_grads), ("channel", (0, 7), channel_grads)):
        plus = [torch.ones(shape.num_layers, shape.num_groups, dtype=torch.float64),
                torch.ones(shape.num_layers, shape.channels, dtype=torch.float64)]
        minus = [mask.clone() for mask in plus]
        index = 0 if which == "group" else 1
        plus[index][layer, unit] += eps
        minus[index][layer, unit] -= eps
        numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
        assert float(grads[0, layer, unit]) == pytest.approx(numeric, rel=1e-6)


def test_a_sequence_with_nothing_to_predict_is_no_fisher_row():
    batch = windows(1)[0]
    batch["attention_mask"][3] = 0
    batch["attention_mask"][5, :-1] = 0  # one real token: it predicts nothing
    group_grads, channel_grads = fisher_gradients(tiny_llama(), [batch])
    assert len(group_grads) == len(channel_grads) == 6
    assert bool(torch.isfinite(group_grads).all()) and bool(torch.isfinite(channel_grads).all())


def test_search_keeps_one_group_per_layer_and_fits_the_budget():
    groups = torch.tensor([[5.0, 4.0], [0.1, 0.2]])  # layer 1's groups are the least important
    channels = torch.arange(96, dtype=torch.float64).view(2, 48)
    keep_groups, keep_channels = decoder_kwon_search(groups, channels, budget=10.0 + 2.0 * 3, group_cost=3.0,
                                                     channel_cost=1.0)
    assert keep_groups.tolist() == [[True, False], [False, True]]  # one forced per layer, 0 left for the rest
    assert int(keep_channels.sum()) == 10 and bool(keep_channels[1, -10:].all())


@pytest.mark.parametrize("ratio", [0.7, 0.4])
def test_budget_is_respected_and_the_masked_model_equals_the_sliced_one(ratio):
    model = tiny_llama()
    shape = decoder_shape(model)
    result = decoder_kwon(model, windows(2), ratio, SEQ_LEN)
    groups = [int(count) for count in (result.group_mask != 0).sum(1)]
    channels = [int(count) for count in (result.channel_mask != 0).sum(1)]
    forced = shape.num_layers * group_flops(shape, SEQ_LEN)
    assert decoder_flops(shape, SEQ_LEN, groups, channels) <= ratio * decoder_flops(shape, SEQ_LEN) + forced
    slack = group_flops(shape, SEQ_LEN) + channel_flops(shape, SEQ_LEN)  # the budget is used up to one unit
    assert decoder_flops(shape, SEQ_LEN, groups, channels) > ratio * decoder_flops(shape, SEQ_LEN) - slack
    assert min(groups) >= 1
    assert result.tuned and bool(((result.channel_mask != 0) & (result.channel_mask != 1)).any())  # real scales
    assert_sliced_equals_masked(model, result.group_mask, result.channel_mask)


def test_keep_ratio_one_keeps_everything_and_changes_nothing():
    model = tiny_llama()
    before = copy.deepcopy(model.state_dict())
    result = decoder_kwon(model, windows(1), 1.0, SEQ_LEN)
    assert bool((result.group_mask == 1).all()) and bool((result.channel_mask == 1).all()) and not result.tuned
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


@torch.no_grad()
def mask_normal_equations(model, batches, teacher_masks, student_masks, target, kept, shape):
    """The reference: ``A^T A`` and ``A^T B`` of ``target`` from two forwards from the embeddings that stop after
    it (teacher masks, student masks), as the tuning computed them before it streamed the blocks."""
    weight = projection_of(model, target).weight.detach()
    unit_dim = shape.group_size * shape.head_dim if target[1] == "attention" else 1
    gram = cross = 0
    for batch in batches:
        rows = batch["attention_mask"].bool()
        with decoder_masked(model, *teacher_masks), capture(model, [target], target, modules=decoder_modules) as store:
            run_until_stop(model, {**batch, "use_cache": False})
        teacher_stream = store[target]["z"][rows]
        with decoder_masked(model, *student_masks), capture(model, [target], target, modules=decoder_modules) as store:
            run_until_stop(model, {**batch, "use_cache": False})
        record = store[target]
        residual = (record["z"] - record["proj"])[rows]
        batch_gram, batch_cross = scale_normal_equations(record["a"][rows], weight, kept, unit_dim,
                                                         teacher_stream.double() - residual.double())
        gram, cross = gram + batch_gram, cross + batch_cross
    return gram, cross


def test_streamed_tuning_equals_tuning_from_whole_forwards():
    """Streaming the blocks (each block's inputs from the previous block's outputs) gives the same scales as two
    forwards from the embeddings per sublayer, on left-padded batches."""
    model = tiny_llama()
    shape = decoder_shape(model)
    batches = windows(2)
    batches[1]["attention_mask"][0, :5] = 0  # left padding: its rows are left out of the least squares
    searched = decoder_kwon(model, batches, 0.5, SEQ_LEN, KwonSettings(mask_tuning=False))
    teacher = decoder_kwon(model, batches, 0.5 ** 0.5, SEQ_LEN, KwonSettings(mask_tuning=False))
    teacher_masks = (teacher.group_mask, teacher.channel_mask)
    groups, channels = searched.group_mask.clone(), searched.channel_mask.clone()
    tuned, stopped = tune_decoder_masks(model, batches, teacher_masks, groups, channels, shape)
    expected_groups, expected_channels = searched.group_mask.clone(), searched.channel_mask.clone()
    for target in sublayer_targets(shape.num_layers):
        mask = expected_groups if target[1] == "attention" else expected_channels
        kept = mask[target[0]].nonzero().flatten()
        scales = ridge_towards_one(*mask_normal_equations(model, batches, teacher_masks,
                                                          (expected_groups, expected_channels), target, kept, shape))
        assert bool(scales.abs().max() <= SCALE_LIMIT)
        mask[target[0], kept] *= scales.float()
    assert stopped is None and tuned == sublayer_targets(shape.num_layers)
    assert not torch.equal(groups, searched.group_mask) and not torch.equal(channels, searched.channel_mask)
    torch.testing.assert_close(groups, expected_groups, rtol=0, atol=1e-6)
    torch.testing.assert_close(channels, expected_channels, rtol=0, atol=1e-6)


def test_mask_tuning_never_worsens_a_sublayers_fit_to_the_teacher():
    """For each tuned sublayer, ||A s - B||^2 at the solved scales is at most at s = 1 (ridge towards one), and it
    improves somewhere; the teacher is the sqrt(keep) search."""
    model, batches = tiny_llama(), windows(2)
    result = decoder_kwon(model, batches, 0.5, SEQ_LEN, KwonSettings(mask_tuning=False))
    teacher = decoder_kwon(model, batches, 0.5 ** 0.5, SEQ_LEN, KwonSettings(mask_tuning=False, rearrange=False))
    shape = decoder_shape(model)
    groups, channels = result.group_mask.clone(), result.channel_mask.clone()
    improved = False
    for target in [(0, "attention"), (0, "mlp"), (1, "attention"), (1, "mlp")]:
        mask = groups if target[1] == "attention" else channels
        kept = mask[target[0]].nonzero().flatten()
        gram, cross = mask_normal_equations(model, batches, (teacher.group_mask, teacher.channel_mask),
                                            (groups, channels), target, kept, shape)
        scales = ridge_towards_one(gram, cross)
        ones = torch.ones_like(scales)

        def error(s):  # ||A s - B||^2 up to the constant ||B||^2
            return float(s @ gram @ s - 2 * s @ cross)
        assert error(scales) <= error(ones) + 1e-9
        improved |= error(scales) < error(ones) - 1e-6
        mask[target[0], kept] *= scales.float()
    assert improved


def test_units_that_contribute_nothing_are_pruned_first():
    """Zero o_proj / down_proj columns: zero Fisher importance, so a budget removing exactly their FLOPs removes
    them and nothing else."""
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, :6] = 0
        model.model.layers[0].self_attn.o_proj.weight[:, 16:] = 0  # group 1 of layer 0 (query heads 2-3)
    shape = decoder_shape(model)
    dead = decoder_flops(shape, SEQ_LEN, [1, 0], [6, 0])
    result = decoder_kwon(model, windows(1), 1 - dead / decoder_flops(shape, SEQ_LEN), SEQ_LEN,
                          KwonSettings(mask_tuning=False))
    assert result.group_mask.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert result.channel_mask[0].tolist() == [0.0] * 6 + [1.0] * 42 and bool(result.channel_mask[1].all())
    with pytest.raises(ValueError, match="faithful"):
        decoder_kwon(tiny_llama(), windows(1), 0.5, SEQ_LEN, KwonSettings(faithful=True))


def test_the_tuning_teacher_is_the_search_at_sqrt_keep(monkeypatch):
    """Kwon et al. tune towards the search-only mask at the looser ratio sqrt(keep), as the encoder does."""
    seen = {}

    def record(model, batches, teacher_masks, group_mask, channel_mask, shape):
        seen["teacher"] = teacher_masks
        return [], None

    monkeypatch.setattr(decoder_kwon_module, "tune_decoder_masks", record)
    model, batches = tiny_llama(), windows(1)
    result = decoder_kwon(model, batches, 0.49, SEQ_LEN)
    shape = decoder_shape(model)
    expected = decoder_kwon_search(result.group_importance, result.channel_importance,
                                   0.7 * decoder_flops(shape, SEQ_LEN), group_flops(shape, SEQ_LEN),
                                   channel_flops(shape, SEQ_LEN))
    assert [mask.tolist() for mask in seen["teacher"]] == [keep.float().tolist() for keep in expected]
