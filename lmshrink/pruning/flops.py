"""The FLOPs model shared by K-prune and Kwon et al. (spec §1.2) and the keep-ratio budget (spec §1.3).

Only the prunable matrix work is counted, at a fixed sequence length ``s`` (report it with every number):
a head costs ``8 s d d_h + 4 s^2 d_h`` (Q, K, V, its slice of O, and the two attention products) and a
neuron ``4 s d`` (a row of FFN1 and a column of FFN2). Embeddings, softmax, GELU, LayerNorm, biases,
pooler and classifier are left out, as in both official codebases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderShape:
    """The sizes the FLOPs model needs (spec §1.1 notation)."""

    num_layers: int  # L
    num_heads: int  # H
    head_dim: int  # d_h
    hidden: int  # d
    ffn: int  # N


@dataclass(frozen=True)
class FlopsBudget:
    """What a FLOPs-budgeted pruning (K-prune, Kwon et al.) must reach: keep ``keep_ratio`` of the encoder's
    FLOPs at sequence length ``seq_len`` (the task's mean dev length; report it with every number)."""

    keep_ratio: float
    seq_len: float


def head_flops(seq_len: float, hidden: int, head_dim: int) -> float:
    return 8 * seq_len * hidden * head_dim + 4 * seq_len**2 * head_dim


def neuron_flops(seq_len: float, hidden: int) -> float:
    return 4 * seq_len * hidden


def encoder_flops(shape: EncoderShape, seq_len: float, heads_per_layer: Sequence[int] | None = None,
                  neurons_per_layer: Sequence[int] | None = None) -> float:
    """``sum_l (h_l f_head + n_l f_neuron)``; counts default to the dense model."""
    heads = heads_per_layer if heads_per_layer is not None else [shape.num_heads] * shape.num_layers
    neurons = neurons_per_layer if neurons_per_layer is not None else [shape.ffn] * shape.num_layers
    if len(heads) != shape.num_layers or len(neurons) != shape.num_layers:
        raise ValueError(f"need one head and one neuron count per layer ({shape.num_layers})")
    f_head, f_neuron = head_flops(seq_len, shape.hidden, shape.head_dim), neuron_flops(seq_len, shape.hidden)
    return sum(h * f_head + n * f_neuron for h, n in zip(heads, neurons))


def flops_budget(shape: EncoderShape, seq_len: float, flops_keep_ratio: float) -> float:
    """FLOPs allowed after pruning. ``flops_keep_ratio`` is the share *kept* (Kwon's semantics); K-prune's
    ``--constraint c`` is the share removed, i.e. ``flops_keep_ratio = 1 - c``."""
    if not 0 < flops_keep_ratio <= 1:
        raise ValueError(f"flops_keep_ratio={flops_keep_ratio} must be in (0, 1]")
    return flops_keep_ratio * encoder_flops(shape, seq_len)
