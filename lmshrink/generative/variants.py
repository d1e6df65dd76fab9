"""The compressed versions of a causal LM that an audit compares with it, built from one list of names.

- ``<name>`` from ``students``: a local HF directory (e.g. a distilled student saved by ``Distillation``);
- ``l1-<sparsity>``: global unstructured L1 magnitude pruning of the block Linears (the baseline of the GPT-2
  compression-fairness study), applied to a copy;
- ``<scheme>`` from ``quantize``: any CPU scheme of :mod:`lmshrink.quantize`, applied to a copy (LM head kept).
"""

from __future__ import annotations

import copy

from torch import nn

from lmshrink.backbones import load_causal_lm
from lmshrink.pruning.magnitude import decoder_linears, prune_unstructured_l1
from lmshrink.quantize import quantize_model

REFERENCE = "teacher"


def build_variants(teacher: nn.Module, students: dict[str, str] | None = None, sparsities: list[float] | None = None,
                   quantize: list[str] | None = None) -> dict[str, nn.Module]:
    """``{"teacher": teacher, <variant name>: model, ...}``; every model in eval mode."""
    variants = {REFERENCE: teacher.eval()}
    for name, path in (students or {}).items():
        if name in variants:
            raise ValueError(f"students: name {name!r} is taken")
        variants[name] = load_causal_lm(path, option=f"students.{name}").eval()
    for sparsity in sparsities or []:
        pruned = copy.deepcopy(teacher)
        prune_unstructured_l1(pruned, sparsity, decoder_linears(pruned))
        variants[f"l1-{sparsity:g}"] = pruned.eval()
    for scheme in quantize or []:
        quantized = copy.deepcopy(teacher).eval()
        quantize_model(quantized, scheme, skip_modules=["lm_head"])
        variants[scheme] = quantized
    return variants
