"""Where the prunable parts of each encoder architecture live, by real Hugging Face module names.

Spec §5.11: BERT and RoBERTa share paths; HF DistilBERT needs its own (the table itself lives in
:mod:`sliced_modeling`, which pruned model directories carry). Each layer has a multi-head
attention sublayer (Q, K, V, output projection O, LayerNorm LN1) and a feed-forward sublayer (FFN1,
FFN2, LN2). Masks act on the *inputs* of O (one entry per head dimension) and FFN2 (one per neuron).
"""

from __future__ import annotations

from torch import nn

from lmshrink.pruning.flops import EncoderShape
from lmshrink.pruning.encoder.sliced_modeling import LAYOUTS, EncoderLayout

__all__ = ["LAYOUTS", "EncoderLayout", "EncoderShape", "layout_of", "shape_of", "sublayer_modules"]


def layout_of(model: nn.Module) -> EncoderLayout:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in LAYOUTS:
        raise ValueError(f"pruning does not support model_type {model_type!r}; supported: {sorted(LAYOUTS)}")
    return LAYOUTS[model_type]


def shape_of(model: nn.Module) -> EncoderShape:
    """Dense sizes, from the config (also right for a physically pruned model, whose layers are narrower)."""
    layout = layout_of(model)
    layers = model.get_submodule(layout.layers)
    num_heads = getattr(model.config, layout.num_heads_field)
    hidden = layers[0].get_submodule(layout.query).in_features
    return EncoderShape(num_layers=len(layers), num_heads=num_heads, head_dim=hidden // num_heads, hidden=hidden,
                        ffn=getattr(model.config, layout.ffn_field))


def sublayer_modules(model: nn.Module, sublayer: tuple[int, str]) -> tuple[nn.Linear, nn.LayerNorm]:
    """(output projection, LayerNorm) of an encoder sublayer ``(layer, "mha" | "ffn")``: what
    :func:`lmshrink.pruning.capture.capture` hooks."""
    layout = layout_of(model)
    layer = model.get_submodule(layout.layers)[sublayer[0]]
    if sublayer[1] == "mha":
        return layer.get_submodule(layout.attention_output), layer.get_submodule(layout.attention_norm)
    return layer.get_submodule(layout.ffn_out), layer.get_submodule(layout.ffn_norm)
