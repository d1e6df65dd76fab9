"""Cut a Linear to the rows and columns a structured pruning kept: what turns masks into a smaller model, for
encoders (:mod:`lmshrink.pruning.encoder.slicing`) and decoders (:mod:`lmshrink.pruning.decoder.structure`)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn


def slice_linear(linear: nn.Linear, rows: Tensor | None = None, columns: Tensor | None = None,
                 column_scale: Tensor | None = None) -> nn.Linear:
    """A new Linear keeping ``rows`` (outputs) and/or ``columns`` (inputs), the kept columns scaled by
    ``column_scale[columns]`` (mask values folded into the weights)."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        rows = rows.to(weight.device)
        weight, bias = weight[rows], (bias[rows] if bias is not None else None)
    if columns is not None:
        scale = column_scale[columns].to(device=weight.device, dtype=weight.dtype) if column_scale is not None else 1
        weight = weight[:, columns.to(weight.device)] * scale
    with warnings.catch_warnings():  # a fully pruned sublayer keeps a zero-width Linear
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                        dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new
