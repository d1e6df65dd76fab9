"""bitsandbytes schemes: LLM.int8 (Dettmers et al. 2022) and 4-bit NF4 / FP4 (Dettmers et al. 2023).

Linear layers are swapped for ``Linear8bitLt`` / ``Linear4bit`` holding the original weights; bitsandbytes
quantizes them when the module is moved to its device (``.to("cpu")`` on the CPU backend).
"""

from __future__ import annotations

import torch
from torch import nn

BNB_CPU_BLOCK_N = 32
"""bitsandbytes 0.50 CPU 4-bit kernels need out_features divisible by this in eval mode
("N must be divisible by block_n"); such layers are skipped (and reported) on CPU."""


def to_int8(linear: nn.Linear, device: torch.device, threshold: float = 6.0) -> nn.Module:
    """LLM.int8 layer: int8 weights per output row, outlier features (|x| > threshold) in 16-bit."""
    import bitsandbytes as bnb

    layer = bnb.nn.Linear8bitLt(
        linear.in_features, linear.out_features, bias=linear.bias is not None,
        has_fp16_weights=False, threshold=threshold,
    )
    layer.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer.to(device)


def to_4bit(linear: nn.Linear, device: torch.device, quant_type: str) -> nn.Module:
    """NF4 or FP4 weights in blocks of 64 with an absmax scale each; compute in the input's dtype."""
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(
        linear.in_features, linear.out_features, bias=linear.bias is not None,
        quant_type=quant_type, compute_dtype=linear.weight.dtype,
    )
    layer.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type=quant_type)
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer.to(device)


def fits_cpu_4bit(linear: nn.Linear) -> bool:
    return linear.out_features % BNB_CPU_BLOCK_N == 0


def load_int8_with_transformers(model_dir, num_labels: int, skip_modules: list[str]) -> nn.Module:
    """The same LLM.int8 model through transformers' own path (``BitsAndBytesConfig(load_in_8bit=True)``),
    for users who load fine-tuned HF directories directly; weights come from a local directory only."""
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0, llm_int8_skip_modules=list(skip_modules))
    return AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=num_labels, quantization_config=config, device_map="cpu", dtype=torch.float32,
        local_files_only=True,
    ).eval()
