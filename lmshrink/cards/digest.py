"""What a card knows of a network's weights: their fingerprint (is the model being measured the one a directory
holds?) and their size.

A measurement goes on a directory's card only when it was taken on those very weights. A teacher's ``fit``
exports the final weights but may test another checkpoint; a ``test`` may quantize the model it loaded. Comparing
fingerprints, not paths, is what keeps a number about one set of weights off the card of another.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def weights_digest(model: nn.Module) -> str | None:
    """SHA-256 over the names, dtypes, shapes and bytes of ``model``'s state dict, in name order; None when it holds
    something other than plain tensors (a quantized layer's packed or subclassed weights), which cannot be told
    apart this way."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        if type(value) not in (torch.Tensor, nn.Parameter):
            return None
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def parameter_counts(model: nn.Module, parent: nn.Module | None = None) -> dict:
    """Parameters and nonzero parameters (unstructured pruning zeroes weights without removing them) of the model and,
    when given, of the model it was made from."""
    counts = {"parameters": sum(p.numel() for p in model.parameters()),
              "nonzero_parameters": sum(int(p.count_nonzero()) for p in model.parameters())}
    if parent is not None:
        counts |= {f"parent_{key}": value for key, value in parameter_counts(parent).items()}
    return counts
