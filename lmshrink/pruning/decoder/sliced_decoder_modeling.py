"""Llama-style causal LMs whose layers keep different numbers of key/value groups and MLP channels.

This file imports only torch and transformers: it is copied next to the weights of every structurally pruned
decoder, and the config's ``auto_map`` points at it, so the directory loads without lmshrink installed::

    AutoModelForCausalLM.from_pretrained(pruned_dir, trust_remote_code=True)

The unit of attention pruning is a key/value group: one K/V head and the ``num_attention_heads //
num_key_value_heads`` query heads that read it (grouped-query attention). Removing whole groups keeps that ratio,
so the stock attention code runs unchanged on narrower projections (it reshapes with ``-1`` heads and repeats K/V
by the ratio). Every layer keeps at least one group (HF attention cannot run with none). An MLP channel is one
row of ``gate_proj`` and ``up_proj`` and the matching column of ``down_proj``.
"""

from __future__ import annotations

from torch import nn
from transformers import LlamaForCausalLM

GROUPS_FIELD = "lmshrink_kv_groups_per_layer"
CHANNELS_FIELD = "lmshrink_mlp_channels_per_layer"
"""Config fields holding the kept width of every layer; their presence marks a structurally pruned decoder."""


def is_sliced_decoder(config) -> bool:
    return getattr(config, GROUPS_FIELD, None) is not None


def empty_linear(in_features: int, out_features: int, like: nn.Linear) -> nn.Linear:
    """A Linear of the given size with ``like``'s bias presence, dtype and device (weights uninitialised)."""
    return nn.Linear(in_features, out_features, bias=like.bias is not None, device=like.weight.device,
                     dtype=like.weight.dtype)


def set_decoder_layer_widths(layer: nn.Module, groups: int, channels: int, head_dim: int, group_size: int) -> None:
    """Replace the projections of one decoder layer by empty ones of the kept widths."""
    attention, mlp = layer.self_attn, layer.mlp
    query_width, kv_width = groups * group_size * head_dim, groups * head_dim
    attention.q_proj = empty_linear(attention.q_proj.in_features, query_width, attention.q_proj)
    attention.k_proj = empty_linear(attention.k_proj.in_features, kv_width, attention.k_proj)
    attention.v_proj = empty_linear(attention.v_proj.in_features, kv_width, attention.v_proj)
    attention.o_proj = empty_linear(query_width, attention.o_proj.out_features, attention.o_proj)
    mlp.gate_proj = empty_linear(mlp.gate_proj.in_features, channels, mlp.gate_proj)
    mlp.up_proj = empty_linear(mlp.up_proj.in_features, channels, mlp.up_proj)
    mlp.down_proj = empty_linear(channels, mlp.down_proj.out_features, mlp.down_proj)


def shrink_decoder_to_config(model: nn.Module) -> None:
    """Give every layer the widths its config records (weights uninitialised, ready for a state dict)."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    group_size = config.num_attention_heads // config.num_key_value_heads
    for layer, groups, channels in zip(model.model.layers, getattr(config, GROUPS_FIELD),
                                       getattr(config, CHANNELS_FIELD)):
        set_decoder_layer_widths(layer, groups, channels, head_dim, group_size)


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    """A Llama-architecture causal LM (Llama, SmolLM2) with the per-layer widths of its config."""

    def __init__(self, config) -> None:
        super().__init__(config)
        if is_sliced_decoder(config):
            shrink_decoder_to_config(self)
