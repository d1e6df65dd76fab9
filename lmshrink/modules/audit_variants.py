"""The compressed versions of a causal LM that an audit compares with it, built from one list of names.

- ``<name>`` from ``students``: a local HF directory (e.g. a distilled student saved by ``Distillation``);
- ``l1-<sparsity>``: global unstructured L1 magnitude pruning of the block Linears (the baseline of the GPT-2
  compression-fairness study), applied to a copy;
- ``wanda-0.5``, ``sparsegpt-2:4``, ``magnitude-0.5`` from ``prune``: one-shot pruning of a copy
  (:mod:`lmshrink.pruning.decoder.oneshot`), calibrated on the same seeded windows of real text for every method;
- ``<scheme>`` from ``quantize``: any CPU scheme of :mod:`lmshrink.quantize`, applied to a copy (LM head kept).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

from torch import nn

from lmshrink.backbones import load_causal_lm
from lmshrink.data.calibration_text import calibration_ids
from lmshrink.pruning.decoder.oneshot import OneShotSettings, prune_decoder_with
from lmshrink.pruning.encoder.magnitude import decoder_linears, prune_unstructured_l1
from lmshrink.pruning.methods import DecoderMethod
from lmshrink.quantize import apply

REFERENCE = "teacher"


def build_variants(teacher: nn.Module, students: dict[str, str] | None = None, sparsities: list[float] | None = None,
                   quantize: list[str] | None = None, prune: list[DecoderMethod] | None = None, tokenizer=None,
                   one_shot: OneShotSettings = OneShotSettings(), log: Callable[[str], None] = print,
                   ) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """(``{"teacher": teacher, <variant name>: model, ...}`` with every model in eval mode, ``{name: pruning
    record}`` of the one-shot pruned ones)."""
    variants = {REFERENCE: teacher.eval()}
    for name, path in (students or {}).items():
        if name in variants:
            raise ValueError(f"students: name {name!r} is taken")
        variants[name] = load_causal_lm(path, option=f"students.{name}").eval()
    for sparsity in sparsities or []:
        pruned = copy.deepcopy(teacher)
        prune_unstructured_l1(pruned, sparsity, decoder_linears(pruned))
        variants[f"l1-{sparsity:g}"] = pruned.eval()
    records = {}
    # drawn once, on first use, for every calibrated method: all see the same windows
    calibration = functools.cache(lambda: calibration_ids(tokenizer, one_shot.num_sequences, one_shot.seq_len,
                                                          one_shot.seed))
    for method in prune or []:
        name = method.short_name
        if name in variants:
            raise ValueError(f"prune: name {name!r} is taken")
        pruned = copy.deepcopy(teacher).eval()
        records[name] = prune_decoder_with(pruned, method, calibration, one_shot, log)
        variants[name] = pruned
    for scheme in quantize or []:
        quantized = copy.deepcopy(teacher).eval()
        apply(quantized, scheme)  # lm_head in float
        variants[scheme] = quantized
    return variants, records
