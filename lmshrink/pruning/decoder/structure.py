"""Structured units of Llama-style decoders, their FLOPs, masks and physical slicing (spec §1-2, §6 for decoders).

The pruning specification's encoder model carried to decoders in the same spirit:

- Units: a key/value *group* (one K/V head with the ``r = num_attention_heads // num_key_value_heads`` query
  heads that read it: pruning a query head alone would leave the K/V head serving the others, pruning a K/V head
  alone would orphan its query heads) and an MLP *channel* (a row of ``gate_proj`` and ``up_proj``, a column of
  ``down_proj``).
- FLOPs at sequence length ``s`` (only prunable matrix work, as spec §1.2): a group costs
  ``4 s d d_h (r + 1) + 4 s^2 r d_h`` (r query rows and r output columns, one K and one V head, the two attention
  products of r heads; with r = 1 this is the encoder's head cost ``8 s d d_h + 4 s^2 d_h``), a channel ``6 s d``.
  Embeddings, the LM head, norms and the attention softmax are left out.
- Masks act on the inputs of ``o_proj`` (one gate per group, repeated over its r query heads' dimensions) and of
  ``down_proj`` (one per channel), as forward pre-hooks, so every attention kernel keeps working (spec §5.3).
- Slicing keeps whole groups; every layer keeps at least one (HF attention cannot run with none). Mask values
  other than 0/1 are folded into the output projections' columns, so the sliced model computes exactly what the
  masked one does.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from lmshrink.pruning.decoder import sliced_decoder_modeling
from lmshrink.pruning.masks import scale_input
from lmshrink.pruning.decoder.sliced_decoder_modeling import (
    CHANNELS_FIELD,
    GROUPS_FIELD,
    PrunedLlamaForCausalLM,
    is_sliced_decoder,
)
from lmshrink.pruning.linear_slicing import slice_linear

SUPPORTED = ("llama",)
"""Model types whose blocks have ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (SmolLM2 is llama)."""


Target = tuple[int, str]
"""A decoder sublayer: ``(layer, "attention" | "mlp")``."""


@dataclass(frozen=True)
class DecoderShape:
    num_layers: int
    hidden: int  # d
    num_heads: int  # query heads
    num_groups: int  # key/value heads
    head_dim: int  # d_h
    channels: int  # MLP width

    @property
    def group_size(self) -> int:
        """Query heads per key/value group (r)."""
        return self.num_heads // self.num_groups


def decoder_shape(model: nn.Module) -> DecoderShape:
    """Dense sizes from the config; refuses an architecture whose blocks it does not know."""
    config = model.config
    if config.model_type not in SUPPORTED:
        raise ValueError(f"structured decoder pruning supports model types {list(SUPPORTED)}, not "
                         f"{config.model_type!r}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return DecoderShape(config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                        config.num_key_value_heads, head_dim, config.intermediate_size)


def sublayer_targets(num_layers: int) -> list[Target]:
    """Bottom-up order: attention_0, mlp_0, attention_1, ..., mlp_{L-1}."""
    return [(layer, kind) for layer in range(num_layers) for kind in ("attention", "mlp")]


def projection_of(model: nn.Module, target: Target) -> nn.Linear:
    """The sublayer's output projection, whose input the masks gate: ``o_proj`` or ``down_proj``."""
    layer = model.model.layers[target[0]]
    return layer.self_attn.o_proj if target[1] == "attention" else layer.mlp.down_proj


def _sum_reader(model: nn.Module, target: Target) -> nn.Module:
    """The module whose input is the residual stream right after ``target`` (pre-norm: the next norm)."""
    layers = model.model.layers
    layer, kind = target
    if kind == "attention":
        return layers[layer].post_attention_layernorm
    return layers[layer + 1].input_layernorm if layer + 1 < len(layers) else model.model.norm


def predicting_positions(attention_mask: Tensor) -> Tensor:
    """``[B, T - 1]``: the positions t whose next token is scored, neither being padding (``mask[:, t] &
    mask[:, t + 1]``); a padding position predicts nothing and nothing predicts a padding token."""
    mask = attention_mask.bool()
    return mask[:, :-1] & mask[:, 1:]


def decoder_modules(model: nn.Module, target: Target) -> tuple[nn.Module, nn.Module]:
    """What :func:`~lmshrink.pruning.capture.capture` hooks for a decoder sublayer."""
    return projection_of(model, target), _sum_reader(model, target)


def group_flops(shape: DecoderShape, seq_len: float) -> float:
    r, d, dh = shape.group_size, shape.hidden, shape.head_dim
    return 4 * seq_len * d * dh * (r + 1) + 4 * seq_len**2 * r * dh


def channel_flops(shape: DecoderShape, seq_len: float) -> float:
    return 6 * seq_len * shape.hidden


def decoder_flops(shape: DecoderShape, seq_len: float, groups_per_layer: list[int] | None = None,
                  channels_per_layer: list[int] | None = None) -> float:
    """``sum_l (g_l f_group + c_l f_channel)``; counts default to the dense model."""
    groups = groups_per_layer if groups_per_layer is not None else [shape.num_groups] * shape.num_layers
    channels = channels_per_layer if channels_per_layer is not None else [shape.channels] * shape.num_layers
    if len(groups) != shape.num_layers or len(channels) != shape.num_layers:
        raise ValueError(f"need one group and one channel count per layer ({shape.num_layers})")
    f_group, f_channel = group_flops(shape, seq_len), channel_flops(shape, seq_len)
    return sum(g * f_group + c * f_channel for g, c in zip(groups, channels))


@contextmanager
def decoder_masked(model: nn.Module, group_mask: Tensor, channel_mask: Tensor):
    """Run ``model`` with ``group_mask`` ``[L, G]`` and ``channel_mask`` ``[L, N]`` applied (values may be scales
    and may require grad: their gradient is the unit's score); hooks are removed on exit."""
    shape = decoder_shape(model)
    if tuple(group_mask.shape) != (shape.num_layers, shape.num_groups):
        raise ValueError(f"group_mask has shape {tuple(group_mask.shape)}, expected "
                         f"{(shape.num_layers, shape.num_groups)}")
    if tuple(channel_mask.shape) != (shape.num_layers, shape.channels):
        raise ValueError(f"channel_mask has shape {tuple(channel_mask.shape)}, expected "
                         f"{(shape.num_layers, shape.channels)}")
    handles = []
    try:
        for index, layer in enumerate(model.model.layers):
            per_dim = group_mask[index].repeat_interleave(shape.group_size * shape.head_dim)
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(scale_input(per_dim)))
            handles.append(layer.mlp.down_proj.register_forward_pre_hook(scale_input(channel_mask[index])))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def slice_decoder(model: nn.Module, group_mask: Tensor, channel_mask: Tensor) -> nn.Module:
    """Slice ``model`` in place to the non-zero entries of the masks, record the widths in its config and make it a
    :class:`PrunedLlamaForCausalLM`, so that it saves and reloads. Returns the model."""
    shape = decoder_shape(model)
    if is_sliced_decoder(model.config):
        raise ValueError("model is already physically pruned; prune the dense model instead")
    empty = [index for index in range(shape.num_layers) if not bool((group_mask[index] != 0).any())]
    if empty:
        raise ValueError(f"layers {empty} keep no key/value group; every layer must keep at least one")
    query_dims = shape.group_size * shape.head_dim
    groups_kept, channels_kept = [], []
    for index, layer in enumerate(model.model.layers):
        attention, mlp = layer.self_attn, layer.mlp
        groups = group_mask[index].nonzero().flatten()
        kv_rows = (groups[:, None] * shape.head_dim + torch.arange(shape.head_dim)).flatten()
        query_rows = (groups[:, None] * query_dims + torch.arange(query_dims)).flatten()
        attention.q_proj = slice_linear(attention.q_proj, rows=query_rows)
        attention.k_proj = slice_linear(attention.k_proj, rows=kv_rows)
        attention.v_proj = slice_linear(attention.v_proj, rows=kv_rows)
        attention.o_proj = slice_linear(attention.o_proj, columns=query_rows,
                                        column_scale=group_mask[index].repeat_interleave(query_dims))
        channels = channel_mask[index].nonzero().flatten()
        mlp.gate_proj = slice_linear(mlp.gate_proj, rows=channels)
        mlp.up_proj = slice_linear(mlp.up_proj, rows=channels)
        mlp.down_proj = slice_linear(mlp.down_proj, columns=channels, column_scale=channel_mask[index])
        groups_kept.append(len(groups))
        channels_kept.append(len(channels))
    setattr(model.config, GROUPS_FIELD, groups_kept)
    setattr(model.config, CHANNELS_FIELD, channels_kept)
    model.config.auto_map = {"AutoModelForCausalLM": f"{Path(sliced_decoder_modeling.__file__).stem}."
                                                     f"{PrunedLlamaForCausalLM.__name__}"}
    model.__class__ = PrunedLlamaForCausalLM  # same attributes and forward; only construction differs
    return model


def save_sliced_decoder(model: nn.Module, directory: str | Path) -> None:
    """``save_pretrained`` plus the modeling file its ``auto_map`` names (the caller adds the tokenizer)."""
    model.save_pretrained(directory)
    shutil.copyfile(sliced_decoder_modeling.__file__, Path(directory) / Path(sliced_decoder_modeling.__file__).name)


def load_sliced_decoder(directory: str | Path) -> nn.Module:
    """Reload a model saved by :func:`save_sliced_decoder` with lmshrink's own class (no ``trust_remote_code``)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    if not is_sliced_decoder(config):
        raise ValueError(f"{directory}: config.json has no {GROUPS_FIELD}; not a decoder pruned by lmshrink")
    return PrunedLlamaForCausalLM.from_pretrained(directory, config=config, local_files_only=True)
