"""PyTorch eager dynamic int8 quantization of Linear layers: the baseline of the compression-fairness papers.

``torch.ao.quantization.quantize_dynamic`` is deprecated upstream in favour of torchao; it is kept here,
isolated, only to reproduce those baselines.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_dynamic_int8(model: nn.Module, skip: set[str]) -> list[str]:
    """Quantize every Linear not named in ``skip`` in place; returns the names quantized."""
    targets = {
        name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name not in skip
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        torch.ao.quantization.quantize_dynamic(model, qconfig_spec=targets, dtype=torch.qint8, inplace=True)
    return sorted(targets)
