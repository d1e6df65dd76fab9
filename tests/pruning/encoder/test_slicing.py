"""Spec §7.4-7.5 on the sliced side: masked == sliced (padded batch; a layer without heads, a layer without
neurons, a single head, tuned scales), the sliced directory reloads with stock transformers and with lmshrink,
and the official K-prune LN(x) variant of a fully pruned sublayer differs from LN(x + b)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from lmshrink.backbones import load_sequence_classifier
from lmshrink.pruning.encoder.gates import full_masks, masked
from lmshrink.pruning.encoder.run import count_parameters
from lmshrink.pruning.encoder.slicing import load_sliced, save_sliced, shrink_to_widths, slice_encoder
from tests.pruning.tiny import padded_batch, tiny_encoders


def awkward_masks(model):
    heads, neurons = full_masks(model)
    heads[0] = 0  # layer 0: no head left
    heads[1, :3] = 0  # layer 1: exactly one head ...
    heads[1, 3] = 0.7  # ... with a tuned scale
    neurons[0, :10] = 0
    neurons[0, 20] = 1.3
    neurons[1] = 0  # layer 1: no neuron left
    return heads, neurons


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
def test_masked_equals_sliced_and_reloads(name, tmp_path):
    model = tiny_encoders(initializer_range=0.5)[name]
    batch = padded_batch()
    heads, neurons = awkward_masks(model)
    dense = model(**batch).logits
    with masked(model, heads, neurons):
        expected = model(**batch).logits
    assert not torch.allclose(expected, dense, atol=1e-3)  # the masks matter: the comparison below can fail
    sliced = slice_encoder(copy.deepcopy(model), heads, neurons)
    torch.testing.assert_close(sliced(**batch).logits, expected, rtol=0, atol=1e-5)
    assert count_parameters(sliced) < count_parameters(model)
    save_sliced(sliced, tmp_path)
    for reloaded in (load_sliced(tmp_path),
                     AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True),
                     load_sequence_classifier(tmp_path, num_labels=3)):
        torch.testing.assert_close(reloaded.eval()(**batch).logits, expected, rtol=0, atol=1e-5)
        assert reloaded.config.lmshrink_heads_per_layer == [0, 1]
        assert reloaded.config.lmshrink_ffn_per_layer == [54, 0]


def test_identity_masks_slice_to_the_same_model():
    model = tiny_encoders(initializer_range=0.5)["bert"]
    batch = padded_batch()
    sliced = slice_encoder(copy.deepcopy(model), *full_masks(model))
    torch.testing.assert_close(sliced(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    assert count_parameters(sliced) == count_parameters(model)


def test_official_fully_pruned_variant_layernorm_of_input_differs():
    """K-prune's code drops b_O of a fully pruned sublayer (LN(x)); ours keeps LN(x + b_O) = the masked model."""
    model = tiny_encoders(initializer_range=0.5)["bert"]
    with torch.no_grad():  # HF initialises biases to 0, which would hide the difference
        model.bert.encoder.layer[0].attention.output.dense.bias.normal_(0, 0.5)
    batch = padded_batch()
    heads, neurons = full_masks(model)
    heads[0] = 0
    ours = slice_encoder(copy.deepcopy(model), heads, neurons)
    official = copy.deepcopy(ours)
    with torch.no_grad():
        official.bert.encoder.layer[0].attention.output.dense.bias.zero_()
    with masked(model, heads, neurons):
        expected = model(**batch).logits
    torch.testing.assert_close(ours(**batch).logits, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(official(**batch).logits, expected, atol=1e-3)


def test_rebuilding_widths_then_loading_state_equals_the_sliced_model():
    """How DDP ranks rebuild the pruned model: dense model, shrunk to the recorded widths, plus the state dict."""
    models = tiny_encoders(initializer_range=0.5)
    sliced = slice_encoder(copy.deepcopy(models["distilbert"]), *awkward_masks(models["distilbert"]))
    rebuilt = shrink_to_widths(copy.deepcopy(models["distilbert"]), [0, 1], [54, 0])
    rebuilt.load_state_dict(sliced.state_dict())
    batch = padded_batch()
    torch.testing.assert_close(rebuilt(**batch).logits, sliced(**batch).logits, rtol=0, atol=0)


def test_refuses_to_slice_twice():
    model = tiny_encoders()["bert"]
    slice_encoder(model, *full_masks(model))
    with pytest.raises(ValueError, match="already physically pruned"):
        slice_encoder(model, *full_masks(model))
