"""Quantization-aware training with torchao fake quantization (prepare -> train -> convert).

``prepare`` swaps Linear layers for ``FakeQuantizedLinear`` that keep the same float ``weight``
parameters (so an optimizer built afterwards, or before, trains them) and the same state-dict keys (so
checkpoints written during QAT resume into a freshly prepared model). ``convert`` replaces them with real
int weights (int8 per-token activations x int4 or int8 per-group weights, torchao's
``Int8DynamicActivationIntxWeightConfig``), numerically identical to the fake-quantized forward.
"""

from __future__ import annotations

import torch
from torch import nn

from lmshrink.quantize.schemes import matches_any


def qat_base_config(weight_bits: int, group_size: int):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerGroup

    if weight_bits not in (4, 8):
        raise ValueError(f"weight_bits={weight_bits}: QAT supports 4 or 8")
    dtype = torch.int4 if weight_bits == 4 else torch.int8
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=PerGroup(group_size))


def _eligible(skip_modules: list[str], group_size: int):
    def keep(module: nn.Module, name: str) -> bool:
        return type(module) is nn.Linear and not matches_any(name, skip_modules) and module.in_features % group_size == 0

    return keep


def prepare_qat(model: nn.Module, weight_bits: int = 4, group_size: int = 32, skip_modules: list[str] | None = None) -> list[str]:
    """Insert fake quantization in place; returns the names of the prepared layers (none if already prepared)."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    keep = _eligible(list(skip_modules or []), group_size)
    names = [name for name, module in model.named_modules() if keep(module, name)]
    if names:
        quantize_(model, QATConfig(qat_base_config(weight_bits, group_size), step="prepare"), filter_fn=keep)
    return names


def is_prepared(model: nn.Module) -> bool:
    from torchao.quantization.qat.linear import FakeQuantizedLinear

    return any(isinstance(module, FakeQuantizedLinear) for module in model.modules())


def convert_qat(model: nn.Module, weight_bits: int = 4, group_size: int = 32) -> None:
    """Replace the fake-quantized layers by layers with real integer weights, in place."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    quantize_(model, QATConfig(qat_base_config(weight_bits, group_size), step="convert"))
