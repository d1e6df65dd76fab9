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
        # tile_packed_to_4d is the layout of tinygemm (aten._weight_int4pack_mm); torchao's default, plain, needs the
        # separate mslk kernels package ("Requires mslk >= 1.0.0" on the first GPU run)
        "torchao-int4-tinygemm": lambda: Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d"),
    }[name]()


BFLOAT16_WEIGHTS = {"torchao-int4-tinygemm"}
"""Schemes whose kernels quantize bfloat16 weights only (tinygemm: "Only bfloat16 is supported for
Int4TilePackedTo4dTensor", seen on the first GPU run); their Linears are cast to bfloat16 first. tinygemm casts the
activations to bfloat16 itself and returns the caller's dtype, so the rest of the model stays as it was."""


def quantize_torchao(model: nn.Module, scheme: str, skip: set[str]) -> list[str]:
    """Quantize the Linear layers not named in ``skip`` in place; returns the names quantized."""
    from torchao.quantization import quantize_

    quantized = []

    def keep(module: nn.Module, name: str) -> bool:
        if isinstance(module, nn.Linear) and name not in skip:
            quantized.append(name)
            return True
        return False

    if scheme in BFLOAT16_WEIGHTS:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and name not in skip:
                module.to(torch.bfloat16)
    quantize_(model, torchao_config(scheme), filter_fn=keep)
    return sorted(quantized)
