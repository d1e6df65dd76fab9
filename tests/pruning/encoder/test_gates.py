"""Masks as pre-hooks: identity at all-ones; zero entries equal removing weights; a fully masked sublayer
is LN(x + b_out) (spec §7.3-7.5, on the masked side)."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.pruning.encoder.arch import layout_of, shape_of
from lmshrink.pruning.encoder.gates import full_masks, masked
from tests.pruning.tiny import padded_batch, tiny_encoders


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
def test_masks_equal_weight_removal(name):
    model = tiny_encoders()[name]
    layout, shape = layout_of(model), shape_of(model)
    batch = padded_batch()
    dense = model(**batch).logits
    heads, neurons = full_masks(model)
    with masked(model, heads, neurons):
        torch.testing.assert_close(model(**batch).logits, dense, rtol=0, atol=0)  # identity at all ones
    heads[0, 1] = 0
    heads[1] = 0  # layer 1: every head pruned
    neurons[0, :5] = 0
    neurons[1, 10] = 0.5  # non-binary (tuned) scale
    with masked(model, heads, neurons):
        got = model(**batch).logits
    reference = copy.deepcopy(model)
    layers = reference.get_submodule(layout.layers)
    with torch.no_grad():
        layers[0].get_submodule(layout.attention_output).weight[:, 1 * shape.head_dim:2 * shape.head_dim] = 0
        layers[1].get_submodule(layout.attention_output).weight.zero_()
        layers[0].get_submodule(layout.ffn_out).weight[:, :5] = 0
        layers[1].get_submodule(layout.ffn_out).weight[:, 10] *= 0.5
    torch.testing.assert_close(got, reference(**batch).logits, rtol=1e-5, atol=1e-6)
    assert not model.get_submodule(layout.layers)[0].get_submodule(layout.attention_output)._forward_pre_hooks


def test_fully_masked_attention_sublayer_is_layernorm_of_input_plus_bias():
    model = tiny_encoders()["bert"]
    heads, neurons = full_masks(model)
    heads[0] = 0
    captured = {}
    layer = model.bert.encoder.layer[0]

    def keep_output(module, args, out):
        captured["out"] = out[0] if isinstance(out, tuple) else out

    def keep_input(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["hidden_states"]

    layer.attention.register_forward_hook(keep_output)
    layer.register_forward_pre_hook(keep_input, with_kwargs=True)
    with masked(model, heads, neurons):
        model(**padded_batch())
    expected = layer.attention.output.LayerNorm(captured["x"] + layer.attention.output.dense.bias)
    torch.testing.assert_close(captured["out"], expected, rtol=1e-5, atol=1e-6)


def test_wrong_mask_shapes_and_unsupported_architecture():
    model = tiny_encoders()["bert"]
    heads, neurons = full_masks(model)
    with pytest.raises(ValueError, match=r"head_mask has shape \(2, 3\), expected \(2, 4\)"):
        with masked(model, heads[:, :3], neurons):
            pass
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32))
    with pytest.raises(ValueError, match=r"pruning does not support model_type 'llama'"):
        full_masks(llama)
