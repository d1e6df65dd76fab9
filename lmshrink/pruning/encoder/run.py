"""One entry point for every pruning method: masks or weights in, a physically smaller model and its record out.

The record (a JSON-ready dict) carries what a reader of the result needs: FLOPs before/after with the sequence
length s they assume, kept heads and neurons per layer, parameter counts, and pruning wall time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import Tensor, nn

from lmshrink.pruning.encoder.arch import shape_of
from lmshrink.pruning.encoder.gates import full_masks
from lmshrink.pruning.encoder.kprune import kprune as kprune_masks
from lmshrink.pruning.encoder.kwon import kwon as kwon_masks
from lmshrink.pruning.encoder.magnitude import prune_unstructured_l1, structured_head_mask
from lmshrink.pruning.encoder.slicing import slice_encoder
from lmshrink.pruning.flops import FlopsBudget, encoder_flops
from lmshrink.pruning.methods import EncoderMethod, KPrune, Kwon, L1Heads, L1Unstructured
from lmshrink.pruning.score_precision import ScorePrecision


@dataclass
class PruneOutcome:
    model: nn.Module
    record: dict


def mask_digest(head_mask: Tensor, neuron_mask: Tensor) -> str:
    """A short fingerprint of which heads and neurons were kept: two runs kept the same units iff it matches."""
    digest = hashlib.sha256()
    for mask in (head_mask, neuron_mask):
        digest.update((mask != 0).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _kprune(model: nn.Module, batches, method: KPrune, seq_len: float, score_precision: ScorePrecision
            ) -> tuple[Tensor, Tensor, dict]:
    result = kprune_masks(model, batches, FlopsBudget(method.flops_keep_ratio, seq_len), method.settings,
                          score_precision)
    return result.head_mask, result.neuron_mask, {"steps": [asdict(step) for step in result.steps],
                                                  "stage_seconds": result.stage_seconds}


def _kwon(model: nn.Module, batches, method: Kwon, seq_len: float, score_precision: ScorePrecision
          ) -> tuple[Tensor, Tensor, dict]:
    result = kwon_masks(model, batches, FlopsBudget(method.flops_keep_ratio, seq_len), method.settings,
                        score_precision)
    return result.head_mask, result.neuron_mask, {"tuned_sublayers": result.tuned_sublayers,
                                                  "tuning_stopped_at": result.stopped_at}


def _l1_heads(model: nn.Module, batches, method: L1Heads, seq_len: float, score_precision: ScorePrecision
              ) -> tuple[Tensor, Tensor, dict]:
    return structured_head_mask(model, method.sparsity), full_masks(model)[1], {}


def _l1_unstructured(model: nn.Module, batches, method: L1Unstructured, seq_len: float,
                     score_precision: ScorePrecision) -> tuple[Tensor, Tensor, dict]:
    details = {"sparsity_reached": prune_unstructured_l1(model, method.sparsity)}
    return *full_masks(model), details


RUNS = {KPrune: _kprune, Kwon: _kwon, L1Heads: _l1_heads, L1Unstructured: _l1_unstructured}
"""How each encoder method runs: its head and neuron masks (sliced when the method slices) and record details
(the magnitude baselines run no gradient pass: the score precision does not apply to them)."""


def prune_encoder(model: nn.Module, batches: Sequence[dict[str, Tensor]], method: EncoderMethod,
                  seq_len: float, score_precision: ScorePrecision = "32") -> PruneOutcome:
    """Prune ``model`` (changed in place) with ``method``; ``batches`` are the fixed-order sample (with labels
    for Kwon et al.; the magnitude baselines read none). Structured results are physically sliced.
    ``score_precision``: K-prune's scores and Kwon et al.'s Fisher gradients in float32 or bf16 autocast
    (:mod:`~lmshrink.pruning.score_precision`; recorded)."""
    if type(method) not in RUNS:
        raise ValueError(f"{method!r} does not prune encoders; use one of {[cls.__name__ for cls in RUNS]}")
    shape = shape_of(model)
    params_before = count_parameters(model)
    start = time.perf_counter()
    head_mask, neuron_mask, details = RUNS[type(method)](model, batches, method, seq_len, score_precision)
    if method.slices:
        slice_encoder(model, head_mask, neuron_mask)
    seconds = time.perf_counter() - start
    heads = [int(count) for count in (head_mask != 0).sum(1)]
    neurons = [int(count) for count in (neuron_mask != 0).sum(1)]
    flops_before, flops_after = encoder_flops(shape, seq_len), encoder_flops(shape, seq_len, heads, neurons)
    record = {
        "method": method.name,
        "options": method.options(),
        "flops_keep_ratio_target": method.options().get("flops_keep_ratio"),
        "sparsity_target": method.options().get("sparsity"),
        "seq_len": seq_len,
        "flops_before": flops_before,
        "flops_after": flops_after,
        "flops_kept": flops_after / flops_before,
        "heads_per_layer": heads,
        "mask_digest": mask_digest(head_mask, neuron_mask),
        "neurons_per_layer": neurons,
        "params_before": params_before,
        "params_after": count_parameters(model),
        "pruning_seconds": seconds,
        "score_precision": score_precision if method.reads_sample else None,
        "sample": {"batches": len(batches), "sentences": sum(len(b["input_ids"]) for b in batches),
                   "tokens": int(sum(b["attention_mask"].sum() for b in batches))},
        **details,
    }
    return PruneOutcome(model, record)
