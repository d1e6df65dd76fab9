"""Magnitude-pruning baselines of the subgroup-robustness literature (no data, no retraining).

- Unstructured: global L1 over the weights of every encoder Linear (Q, K, V, O, FFN1, FFN2), with
  ``torch.nn.utils.prune``; pooler, classifier and embeddings are left dense. The pruning is made
  permanent (``prune.remove``), so the result is a plain model with zeros in its weights.
- Structured: whole attention heads ranked globally by the L1 norm of their weights (their rows of Q, K,
  V and their columns of O); the lowest are masked out with the hook masks of :mod:`masks`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from lmshrink.pruning.encoder.arch import layout_of, shape_of


def encoder_linears(model: nn.Module) -> list[nn.Linear]:
    layout = layout_of(model)
    names = (layout.query, layout.key, layout.value, layout.attention_output, layout.ffn_in, layout.ffn_out)
    return [layer.get_submodule(name) for layer in model.get_submodule(layout.layers) for name in names]


def decoder_linears(model: nn.Module) -> list[nn.Linear]:
    """Every Linear inside a causal LM's transformer blocks (attention and MLP); embeddings and LM head excluded."""
    return [module for module in model.get_decoder().layers.modules() if isinstance(module, nn.Linear)]


def prune_unstructured_l1(model: nn.Module, amount: float, linears: list[nn.Linear] | None = None) -> float:
    """Zero the ``amount`` share of block Linear weights with the smallest magnitude, globally; returns the
    sparsity actually reached over those weights. ``linears`` defaults to the encoder's (:func:`encoder_linears`);
    pass :func:`decoder_linears` for a causal LM."""
    if not 0 <= amount < 1:
        raise ValueError(f"amount={amount} must be in [0, 1)")
    linears = encoder_linears(model) if linears is None else linears
    prune.global_unstructured([(linear, "weight") for linear in linears], pruning_method=prune.L1Unstructured,
                              amount=amount)
    for linear in linears:
        prune.remove(linear, "weight")
    zeros = sum(int((linear.weight == 0).sum()) for linear in linears)
    return zeros / sum(linear.weight.numel() for linear in linears)


def head_l1_scores(model: nn.Module) -> Tensor:
    """``[L, H]`` L1 norm of each head's weights (Q, K, V rows and O columns of its dimensions)."""
    layout, shape = layout_of(model), shape_of(model)
    scores = torch.zeros(shape.num_layers, shape.num_heads)
    for index, layer in enumerate(model.get_submodule(layout.layers)):
        rows = sum(layer.get_submodule(name).weight.detach().abs().sum(dim=1)
                   for name in (layout.query, layout.key, layout.value))
        columns = layer.get_submodule(layout.attention_output).weight.detach().abs().sum(dim=0)
        scores[index] = (rows + columns).view(shape.num_heads, shape.head_dim).sum(dim=1)
    return scores


def structured_head_mask(model: nn.Module, amount: float) -> Tensor:
    """Head mask ``[L, H]`` dropping the ``round(amount * L * H)`` heads with the lowest L1 score globally."""
    if not 0 <= amount < 1:
        raise ValueError(f"amount={amount} must be in [0, 1)")
    scores = head_l1_scores(model)
    mask = torch.ones_like(scores)
    pruned = scores.flatten().argsort()[: round(amount * scores.numel())]
    mask.view(-1)[pruned] = 0
    return mask
