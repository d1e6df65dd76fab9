"""K-prune on a tiny grouped-query Llama: budget, whole groups, masked == sliced, identity at 1, never-worse fit."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.pruning.decoder.kprune import decoder_kprune
from lmshrink.pruning.decoder.structure import decoder_flops, decoder_masked, decoder_shape, group_flops, slice_decoder
from lmshrink.pruning.settings import KPruneSettings
from tests.pruning.decoder.test_structure import inputs, tiny_llama

SEQ_LEN = 9.0


def assert_sliced_equals_masked(model, group_mask, channel_mask):
    """The sliced copy of ``model`` computes what ``model`` under the masks does; returns the sliced copy."""
    batch = inputs()
    with torch.no_grad(), decoder_masked(model, group_mask, channel_mask):
        masked = model(**batch).logits
    sliced = slice_decoder(copy.deepcopy(model), group_mask, channel_mask)
    with torch.no_grad():
        torch.testing.assert_close(sliced(**batch).logits, masked, rtol=1e-5, atol=1e-5)
    return sliced


def windows(count: int = 4) -> list[dict]:
    """``count`` batches of 8 x 16 tokens: 4 batches give ~500 tokens, enough rows for the re-fit of 48 features."""
    generator = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, 64, (8, 16), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


@pytest.mark.parametrize("ratio", [0.7, 0.4])
def test_budget_is_respected_and_the_masked_model_equals_the_sliced_one(ratio):
    model = tiny_llama()
    shape = decoder_shape(model)
    result = decoder_kprune(model, windows(), ratio, SEQ_LEN)
    groups = [int(count) for count in result.group_mask.sum(1)]
    channels = [int(count) for count in result.channel_mask.sum(1)]
    forced = sum(1 for step in result.steps if step["sublayer"] == "attention" and step["kept"] == 1)
    assert decoder_flops(shape, SEQ_LEN, groups, channels) <= (
        ratio * decoder_flops(shape, SEQ_LEN) + forced * group_flops(shape, SEQ_LEN) + 1e-6)
    assert min(groups) >= 1 and sum(channels) < 2 * shape.channels
    sliced = assert_sliced_equals_masked(model, result.group_mask, result.channel_mask)
    assert sliced.config.lmshrink_kv_groups_per_layer == groups


@pytest.mark.slow
def test_keep_ratio_one_keeps_everything_and_changes_no_prediction():
    model, batch = tiny_llama(), inputs()
    with torch.no_grad():
        dense = model(**batch).logits
    result = decoder_kprune(model, windows(), 1.0, SEQ_LEN)
    assert bool(result.group_mask.all()) and bool(result.channel_mask.all())
    with torch.no_grad():  # the re-fit of unpruned sublayers to the dense model moves weights by rounding only
        torch.testing.assert_close(model(**batch).logits, dense, rtol=1e-3, atol=1e-3)


def test_weight_tuning_never_worsens_the_fit_and_faithful_mode_is_refused():
    result = decoder_kprune(tiny_llama(), windows(), 0.5, SEQ_LEN)
    tuned = [step for step in result.steps if "error_after" in step]  # a rejected solve keeps the weights
    assert tuned and all(step["error_after"] <= step["error_before"] for step in tuned if step["accepted"])
    assert any(step["accepted"] and step["error_after"] < 0.99 * step["error_before"] for step in tuned)
    few = decoder_kprune(tiny_llama(), windows(1), 0.5, SEQ_LEN)  # ~126 tokens: too few rows for 48 features
    assert any("not re-fitted" in step.get("skipped", "") for step in few.steps)
    with pytest.raises(ValueError, match="faithful"):
        decoder_kprune(tiny_llama(), windows(), 0.5, SEQ_LEN, KPruneSettings(faithful=True))


def test_units_that_contribute_nothing_are_pruned_first():
    """Channels whose down_proj columns are zero and a group whose o_proj columns are zero carry no knowledge
    (zero gradient, zero energy): with a budget that removes exactly their FLOPs, they and nothing else go."""
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, :6] = 0
        model.model.layers[0].self_attn.o_proj.weight[:, 16:] = 0  # group 1 of layer 0 (query heads 2-3)
    shape = decoder_shape(model)
    dense = decoder_flops(shape, SEQ_LEN)
    dead = decoder_flops(shape, SEQ_LEN, [1, 0], [6, 0])
    result = decoder_kprune(model, windows(), 1 - dead / dense, SEQ_LEN, KPruneSettings(weight_tuning=False))
    assert result.group_mask.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert result.channel_mask[0].tolist() == [0.0] * 6 + [1.0] * 42 and bool(result.channel_mask[1].all())
