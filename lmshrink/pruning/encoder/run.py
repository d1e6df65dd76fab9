"""One entry point for every pruning method: masks or weights in, a physically smaller model and its record out.

The record (a JSON-ready dict) carries what a reader of the result needs: FLOPs before/after with the sequence
length s they assume, kept heads and neurons per layer, parameter counts, and pruning wall time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from torch import Tensor, nn

from lmshrink.pruning.encoder.arch import shape_of
from lmshrink.pruning.flops import FlopsBudget, encoder_flops
from lmshrink.pruning.settings import KPruneSettings
from lmshrink.pruning.encoder.kprune import kprune as kprune_masks
from lmshrink.pruning.settings import KwonSettings
from lmshrink.pruning.encoder.kwon import kwon as kwon_masks
from lmshrink.pruning.encoder.magnitude import prune_unstructured_l1, structured_head_mask
from lmshrink.pruning.encoder.gates import full_masks
from lmshrink.pruning.encoder.slicing import slice_encoder

PruneMethod = Literal["kprune", "kwon", "l1-unstructured", "l1-heads"]
"""The pruning methods as a type: ``--help`` lists them and a typo fails when the command line is parsed."""
METHODS = get_args(PruneMethod)
"""K-prune and Kwon et al. take a FLOPs keep ratio; the magnitude baselines take a sparsity."""


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


def prune_encoder(model: nn.Module, batches: Sequence[dict[str, Tensor]], method: str, seq_len: float,
                  flops_keep_ratio: float = 0.5, sparsity: float = 0.4, kprune: KPruneSettings = KPruneSettings(),
                  kwon: KwonSettings = KwonSettings()) -> PruneOutcome:
    """Prune ``model`` (changed in place) with ``method``; ``batches`` are the fixed-order sample (with labels
    for Kwon et al.; the magnitude baselines need none). Structured results are physically sliced."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {list(METHODS)}")
    shape = shape_of(model)
    params_before = count_parameters(model)
    start = time.perf_counter()
    details: dict = {}
    if method == "l1-unstructured":
        details["sparsity_reached"] = prune_unstructured_l1(model, sparsity)
        head_mask, neuron_mask = full_masks(model)
    else:
        if method == "kprune":
            result = kprune_masks(model, batches, FlopsBudget(flops_keep_ratio, seq_len), kprune)
            details["steps"] = [asdict(step) for step in result.steps]
            details["stage_seconds"] = result.stage_seconds
        elif method == "kwon":
            result = kwon_masks(model, batches, FlopsBudget(flops_keep_ratio, seq_len), kwon)
            details |= {"tuned_sublayers": result.tuned_sublayers, "tuning_stopped_at": result.stopped_at}
        else:
            result = None
        if result is not None:
            head_mask, neuron_mask = result.head_mask, result.neuron_mask
        else:
            head_mask = structured_head_mask(model, sparsity)
            neuron_mask = full_masks(model)[1]
        slice_encoder(model, head_mask, neuron_mask)
    seconds = time.perf_counter() - start
    heads = [int(count) for count in (head_mask != 0).sum(1)]
    neurons = [int(count) for count in (neuron_mask != 0).sum(1)]
    flops_before, flops_after = encoder_flops(shape, seq_len), encoder_flops(shape, seq_len, heads, neurons)
    record = {
        "method": method,
        "flops_keep_ratio_target": flops_keep_ratio if method in ("kprune", "kwon") else None,
        "sparsity_target": sparsity if method.startswith("l1-") else None,
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
        "sample": {"batches": len(batches), "sentences": sum(len(b["input_ids"]) for b in batches),
                   "tokens": int(sum(b["attention_mask"].sum() for b in batches))},
        **details,
    }
    return PruneOutcome(model, record)
