"""Where the prunable parts of each encoder architecture live, by real Hugging Face module names.

Spec §5.11: BERT and RoBERTa share paths; HF DistilBERT needs its own. Each layer has a multi-head
attention sublayer (Q, K, V, output projection O, LayerNorm LN1) and a feed-forward sublayer (FFN1,
FFN2, LN2). Masks act on the *inputs* of O (one entry per head dimension) and FFN2 (one per neuron).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class EncoderLayout:
    layers: str
    """Path of the ModuleList of transformer blocks, from the task model's root."""
    query: str
    key: str
    value: str
    attention_output: str
    attention_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    num_heads_field: str
    """Config field holding the number of attention heads."""


LAYOUTS = {
    "bert": EncoderLayout(
        "bert.encoder.layer", "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
        "output.LayerNorm", "num_attention_heads",
    ),
    "roberta": EncoderLayout(
        "roberta.encoder.layer", "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
        "output.LayerNorm", "num_attention_heads",
    ),
    "distilbert": EncoderLayout(
        "distilbert.transformer.layer", "attention.q_lin", "attention.k_lin", "attention.v_lin",
        "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm", "n_heads",
    ),
}


def layout_of(model: nn.Module) -> EncoderLayout:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in LAYOUTS:
        raise ValueError(f"pruning does not support model_type {model_type!r}; supported: {sorted(LAYOUTS)}")
    return LAYOUTS[model_type]


@dataclass(frozen=True)
class EncoderShape:
    """The sizes the FLOPs model needs (spec §1.1 notation)."""

    num_layers: int  # L
    num_heads: int  # H
    head_dim: int  # d_h
    hidden: int  # d
    ffn: int  # N


def shape_of(model: nn.Module) -> EncoderShape:
    layout = layout_of(model)
    layers = model.get_submodule(layout.layers)
    first = layers[0]
    num_heads = getattr(model.config, layout.num_heads_field)
    query = first.get_submodule(layout.query)
    return EncoderShape(
        num_layers=len(layers), num_heads=num_heads, head_dim=query.out_features // num_heads,
        hidden=query.in_features, ffn=first.get_submodule(layout.ffn_in).out_features,
    )
