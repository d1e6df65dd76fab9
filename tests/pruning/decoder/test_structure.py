"""Structured units of a grouped-query Llama: masked == sliced, groups kept whole, FLOPs, save and reload."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lmshrink.pruning.decoder.structure import (
    channel_flops,
    decoder_flops,
    decoder_masked,
    decoder_shape,
    group_flops,
    load_sliced_decoder,
    save_sliced_decoder,
    slice_decoder,
)
from lmshrink.pruning.flops import head_flops


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=48, max_position_embeddings=32,
                         initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


def inputs() -> dict:
    ids = torch.randint(0, 64, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as generation batches
    return {"input_ids": ids, "attention_mask": mask}


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    groups = torch.tensor([[1.0, 0.0], [0.7, 1.3]])  # layer 0 drops group 1; layer 1 keeps both, rescaled
    channels = torch.ones(2, 48)
    channels[0, ::3], channels[1, 5:20] = 0, 0
    channels[1, 30] = 0.5
    return groups, channels


@torch.no_grad()
def test_sliced_model_computes_what_the_masked_one_does_and_keeps_groups_whole():
    model, batch = tiny_llama(), inputs()
    groups, channels = masks()
    with decoder_masked(model, groups, channels):
        expected = model(**batch).logits
    q_weight = model.model.layers[0].self_attn.q_proj.weight.clone()  # 4 heads x 8 dims; group 0 = heads 0-1
    k_weight = model.model.layers[0].self_attn.k_proj.weight.clone()
    slice_decoder(model, groups, channels)
    torch.testing.assert_close(model(**batch).logits, expected, rtol=1e-5, atol=1e-5)
    attention = model.model.layers[0].self_attn
    assert torch.equal(attention.q_proj.weight, q_weight[:16]) and torch.equal(attention.k_proj.weight, k_weight[:8])
    assert attention.o_proj.in_features == 16 and model.model.layers[1].self_attn.q_proj.out_features == 32
    assert model.config.lmshrink_kv_groups_per_layer == [1, 2]
    assert model.config.lmshrink_mlp_channels_per_layer == [32, 33]


@torch.no_grad()
def test_all_ones_masks_change_nothing():
    model, batch = tiny_llama(), inputs()
    dense = model(**batch).logits
    ones = (torch.ones(2, 2), torch.ones(2, 48))
    with decoder_masked(model, *ones):
        torch.testing.assert_close(model(**batch).logits, dense, rtol=0, atol=0)
    slice_decoder(model, *ones)
    torch.testing.assert_close(model(**batch).logits, dense, rtol=1e-6, atol=1e-6)


def test_flops_reduce_to_the_encoder_model_and_count_what_is_kept():
    shape = decoder_shape(tiny_llama())
    assert shape.group_size == 2 and shape.head_dim == 8
    s = 10.0
    assert group_flops(shape, s) == 4 * s * 32 * 8 * 3 + 4 * s**2 * 2 * 8
    multi_head = decoder_shape(LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=32, num_hidden_layers=1,
                                                            num_attention_heads=4, num_key_value_heads=4,
                                                            intermediate_size=8)))
    assert group_flops(multi_head, s) == head_flops(s, 32, 8)  # r = 1: the encoder's head
    assert decoder_flops(shape, s, [1, 2], [32, 33]) == 3 * group_flops(shape, s) + 65 * channel_flops(shape, s)
    assert decoder_flops(shape, s) == 4 * group_flops(shape, s) + 96 * channel_flops(shape, s)


def test_a_layer_without_groups_and_a_wrong_mask_are_refused():
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"layers \[1\] keep no key/value group"):
        slice_decoder(model, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.ones(2, 48))
    with pytest.raises(ValueError, match=r"group_mask has shape \(2, 4\), expected \(2, 2\)"):
        with decoder_masked(model, torch.ones(2, 4), torch.ones(2, 48)):
            pass


@torch.no_grad()
def test_sliced_decoder_saves_and_reloads_with_and_without_lmshrink(tmp_path):
    model, batch = tiny_llama(), inputs()
    slice_decoder(model, *masks())
    expected = model(**batch).logits
    save_sliced_decoder(model, tmp_path / "pruned")
    for reloaded in (load_sliced_decoder(tmp_path / "pruned"),
                     AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", trust_remote_code=True)):
        torch.testing.assert_close(reloaded.eval()(**batch).logits, expected, rtol=0, atol=0)
        assert reloaded.model.layers[0].mlp.down_proj.in_features == 32
