"""bfloat16 inference: the whole model cast to bf16, the modules kept in float fed float32.

On CPUs with AMX or AVX512-BF16 (and on GPUs) bf16 matmuls run at several times the fp32 rate, so plain bf16 is
the baseline any integer scheme must beat on such a machine. Unlike the integer schemes it casts every module
(embeddings, LayerNorms, attention), not only the Linears; the modules kept in float (the classification or LM
head) get a pre-hook that casts their inputs back to float32, so their outputs (the logits) stay float32.
"""

from __future__ import annotations

import torch
from torch import nn


def _inputs_to_float32(module: nn.Module, args: tuple) -> tuple:
    return tuple(arg.float() if torch.is_tensor(arg) and arg.is_floating_point() else arg for arg in args)


def cast_bfloat16(model: nn.Module, keep_float: set[str]) -> list[str]:
    """Cast ``model`` to bf16 in place except the modules named in ``keep_float``; returns the Linears cast."""
    model.to(torch.bfloat16)
    for name in keep_float:
        module = model.get_submodule(name)
        module.float()
        module.register_forward_pre_hook(_inputs_to_float32)
    return sorted(name for name, module in model.named_modules()
                  if isinstance(module, nn.Linear) and name not in keep_float)
