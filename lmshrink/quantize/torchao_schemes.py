"""torchao weight (and activation) quantization through ``torchao.quantization.quantize_``."""

from __future__ import annotations

import torch
from torch import nn


def torchao_config(name: str):
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )

    return {
        "torchao-int8-dynamic": lambda: Int8DynamicActivationInt8WeightConfig(),
        "torchao-int8-weight": lambda: Int8WeightOnlyConfig(),
        "torchao-int4-weight": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4),
        "torchao-int4-tinygemm": lambda: Int4WeightOnlyConfig(),
    }[name]()


def quantize_torchao(model: nn.Module, scheme: str, skip: set[str]) -> list[str]:
    """Quantize the Linear layers not named in ``skip`` in place; returns the names quantized."""
    from torchao.quantization import quantize_

    quantized = []

    def keep(module: nn.Module, name: str) -> bool:
        if isinstance(module, nn.Linear) and name not in skip:
            quantized.append(name)
            return True
        return False

    quantize_(model, torchao_config(scheme), filter_fn=keep)
    return sorted(quantized)
