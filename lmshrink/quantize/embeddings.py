"""Weight-only quantization of ``nn.Embedding`` tables (torchao ``IntxWeightOnlyConfig``).

Linear-layer schemes leave the word embeddings in float, and in small encoders they are half the model
(MiniLM: 30,522 x 384 of 22.6 M parameters), so sizes stop near 0.6 of fp32. ``int8`` stores one scale per row
(PerAxis(0)); ``int4`` one per 32 values of a row (PerGroup(32)), as torchao's embedding recipes do; on CPU torchao
keeps int4 values unpacked in int8 bytes, so int4 saves no more memory than int8 there. A table whose weight is
shared with another module (an LM head tied to the input embeddings) is left in float and reported: quantizing
one side would untie them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

EmbeddingBits = Literal["float", "int8", "int4"]


def _shared_weights(model: nn.Module) -> dict[int, int]:
    """How many modules hold each parameter (by id)."""
    counts: dict[int, int] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            counts[id(parameter)] = counts.get(id(parameter), 0) + 1
    return counts


def quantize_embeddings(model: nn.Module, bits: EmbeddingBits, skip: set[str]) -> tuple[list[str], dict[str, str]]:
    """Quantize the ``nn.Embedding`` modules not named in ``skip`` in place; returns (quantized names, {skipped
    name: why})."""
    if bits == "float":
        return [], {}
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    shared = _shared_weights(model)
    skipped, targets = {}, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            if name in skip:
                skipped[name] = "in skip_modules"
            elif shared[id(module.weight)] > 1:
                skipped[name] = "weight tied to another module (an LM head)"
            elif module.embedding_dim % 32 and bits == "int4":
                skipped[name] = f"embedding_dim={module.embedding_dim} not a multiple of the int4 group size 32"
            else:
                targets.append(name)
    config = (IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)) if bits == "int8" else
              IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)))
    chosen = set(targets)
    quantize_(model, config, filter_fn=lambda module, name: isinstance(module, nn.Embedding) and name in chosen)
    return sorted(targets), skipped
