"""Head and neuron masks of an encoder as forward pre-hooks on the output projections (spec §1.1, pitfall §5.3):
a pre-hook on O scales each head's context slice and a pre-hook on FFN2 scales each neuron's activation.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lmshrink.pruning.encoder.arch import layout_of, shape_of
from lmshrink.pruning.masks import scale_input


@contextmanager
def masked(model: nn.Module, head_mask: Tensor, neuron_mask: Tensor):
    """Run ``model`` with ``head_mask`` and ``neuron_mask`` ``[L, N]`` applied; hooks are removed on exit even
    if the body raises. ``head_mask`` is ``[L, H]`` (one gate per head) or ``[L, H * d_h]`` (one gate per
    context dimension, as K-prune scores them). Masks may require grad: their gradient is the mask score."""
    layout, shape = layout_of(model), shape_of(model)
    per_dim = (shape.num_layers, shape.num_heads * shape.head_dim)
    if tuple(head_mask.shape) not in ((shape.num_layers, shape.num_heads), per_dim):
        raise ValueError(f"head_mask has shape {tuple(head_mask.shape)}, expected {(shape.num_layers, shape.num_heads)} "
                         f"or {per_dim}")
    if tuple(neuron_mask.shape) != (shape.num_layers, shape.ffn):
        raise ValueError(f"neuron_mask has shape {tuple(neuron_mask.shape)}, expected {(shape.num_layers, shape.ffn)}")
    handles = []
    try:
        for index, layer in enumerate(model.get_submodule(layout.layers)):
            gates = head_mask[index]
            if gates.numel() == shape.num_heads:
                gates = gates.repeat_interleave(shape.head_dim)  # one entry per context dimension
            handles.append(layer.get_submodule(layout.attention_output).register_forward_pre_hook(scale_input(gates)))
            handles.append(layer.get_submodule(layout.ffn_out).register_forward_pre_hook(scale_input(neuron_mask[index])))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def full_masks(model: nn.Module) -> tuple[Tensor, Tensor]:
    """All-ones head and neuron masks (nothing pruned)."""
    shape = shape_of(model)
    return torch.ones(shape.num_layers, shape.num_heads), torch.ones(shape.num_layers, shape.ffn)
