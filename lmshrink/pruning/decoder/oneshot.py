"""One-shot unstructured or N:M pruning of a causal LM's decoder Linears: magnitude, Wanda, SparseGPT.

    record = prune_decoder(model, calibration_ids, SparseGPT(sparsity=0.5))
    record = prune_decoder(model, calibration_ids, Wanda(n_m="2:4"))

Every Linear inside the decoder blocks (attention q/k/v/o, MLP gate/up/down) is pruned; embeddings and the LM
head stay dense, as in both papers. Wanda and SparseGPT stream calibration activations block by block
(:mod:`~lmshrink.pruning.decoder.blocks`): block ``i`` is calibrated on the outputs of the already pruned blocks ``< i``. Magnitude
needs no data; it compares weights within a whole layer (the papers' magnitude baseline), or within each group
of M for N:M. Progress: one line per block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from lmshrink.pruning.decoder.blocks import block_linears, decoder_blocks, first_block_inputs, run_block
from lmshrink.pruning.decoder.sparsegpt import Hessian, sparsegpt_prune
from lmshrink.pruning.sparsity_masks import n_m_mask, row_mask
from lmshrink.pruning.decoder.wanda import InputNorms, wanda_scores
from lmshrink.pruning.methods import (
    BudgetedMethod,
    DecoderMethod,
    KPrune,
    Kwon,
    Magnitude,
    OneShotMethod,
    SparseGPT,
    Wanda,
)

@dataclass(frozen=True)
class OneShotSettings:
    """Calibration settings of decoder pruning (CPU defaults; the papers use 128 x 2048); each method reads those in
    its :attr:`~lmshrink.pruning.methods.PruningMethod.calibration_reads`."""

    num_sequences: int = 64
    """Calibration windows drawn from the calibration text."""
    seq_len: int = 256
    """Tokens per calibration window."""
    seed: int = 0
    """Seed of the windows' offsets."""
    batch_size: int = 8
    """Windows per forward while streaming through the blocks."""

    def __post_init__(self) -> None:
        for name in ("num_sequences", "seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


def unread_settings(settings: OneShotSettings, methods: list[DecoderMethod]) -> list[str]:
    """Names of settings changed from their defaults that none of ``methods`` reads."""
    read = set().union(*(method.calibration_reads for method in methods))
    default = OneShotSettings()
    return [f.name for f in fields(settings) if getattr(settings, f.name) != getattr(default, f.name)
            and f.name not in read]


def _masked(weight: Tensor, mask: Tensor) -> Tensor:
    return weight.detach().masked_fill(mask, 0)


def magnitude_prune(weight: Tensor, sparsity: float | None, n_m: tuple[int, int] | None) -> Tensor:
    scores = weight.detach().abs()
    if n_m is not None:
        return _masked(weight, n_m_mask(scores, *n_m))
    return _masked(weight, row_mask(scores.reshape(1, -1), sparsity).reshape(weight.shape))


def wanda_prune(weight: Tensor, norms: InputNorms, sparsity: float | None, n_m: tuple[int, int] | None) -> Tensor:
    scores = wanda_scores(weight, norms.squared)
    mask = n_m_mask(scores, *n_m) if n_m is not None else row_mask(scores, sparsity)
    return _masked(weight, mask)


def decoder_sparsity(model: nn.Module) -> float:
    """Share of zeros over the decoder blocks' Linear weights."""
    linears = [linear for block in decoder_blocks(model) for linear in block_linears(block).values()]
    return sum(int((linear.weight == 0).sum()) for linear in linears) / sum(linear.weight.numel() for linear in linears)


def _new_weights(linears: dict[str, nn.Linear], method: OneShotMethod, stats: dict) -> dict[str, Tensor]:
    if isinstance(method, Magnitude):
        return {name: magnitude_prune(linear.weight, method.sparsity, method.pattern) for name, linear in linears.items()}
    if isinstance(method, Wanda):
        return {name: wanda_prune(linear.weight, stats[name], method.sparsity, method.pattern)
                for name, linear in linears.items()}
    return {name: sparsegpt_prune(linear.weight, stats[name].matrix, method.sparsity, method.pattern, method.blocksize,
                                  method.percdamp) for name, linear in linears.items()}


STATISTICS = {Wanda: InputNorms, SparseGPT: Hessian}
"""What each calibrated one-shot method accumulates per Linear from its inputs."""


@torch.no_grad()
def prune_decoder(model: nn.Module, calibration_ids: Tensor | None, method: OneShotMethod, batch_size: int = 8,
                  log: Callable[[str], None] = print) -> dict:
    """Prune ``model`` in place; returns a record (method, pattern, sparsity reached, calibration size, seconds)."""
    if not isinstance(method, OneShotMethod):
        raise ValueError(f"{method!r} is not a one-shot method (Magnitude, Wanda, SparseGPT)")
    if method.reads_sample and calibration_ids is None:
        raise ValueError(f"{method.name} needs calibration_ids")
    start = time.perf_counter()
    blocks = decoder_blocks(model)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    try:
        inputs = None if not method.reads_sample else first_block_inputs(
            model, calibration_ids.to(next(model.parameters()).device), batch_size)
        for index, block in enumerate(blocks):
            block_start = time.perf_counter()
            linears = block_linears(block)
            stats = {}
            if method.reads_sample:
                statistic = STATISTICS[type(method)]
                stats = {name: statistic(linear.in_features) for name, linear in linears.items()}
                handles = [linear.register_forward_hook(lambda module, args, output, s=stats[name]: s.add(args[0]))
                           for name, linear in linears.items()]
                try:
                    run_block(block, inputs)
                finally:
                    for handle in handles:
                        handle.remove()
            new = _new_weights(linears, method, stats)
            for name, linear in linears.items():
                linear.weight.copy_(new[name])
            if inputs is not None:
                inputs.hidden = run_block(block, inputs)  # the next block sees this pruned block's outputs
            log(f"[lmshrink] {method.name} block {index + 1}/{len(blocks)}: {len(linears)} Linears pruned, "
                f"{time.perf_counter() - block_start:.1f} s")
    finally:
        model.config.use_cache = use_cache
    return {"method": method.name, "options": method.options(), "sparsity": method.sparsity, "n_m": method.n_m,
            "sparsity_reached": decoder_sparsity(model),
            "calibration": None if calibration_ids is None else list(calibration_ids.shape),
            "pruning_seconds": time.perf_counter() - start}


def prune_decoder_with(model: nn.Module, method: DecoderMethod, calibration: Callable[[], Tensor],
                       settings: OneShotSettings = OneShotSettings(), log: Callable[[str], None] = print) -> dict:
    """Prune ``model`` in place with ``method`` (one-shot, or structured K-prune / Kwon et al., then sliced: see
    :func:`prune_decoder_structured`); ``calibration()`` is called only for the methods that read data."""
    if isinstance(method, BudgetedMethod):
        return prune_decoder_structured(model, calibration(), method, settings, log)
    return prune_decoder(model, calibration() if method.reads_sample else None, method, settings.batch_size, log)


def _block_weights(model: nn.Module) -> int:
    """Weights of the decoder blocks' Linear layers (what structured pruning removes)."""
    return sum(linear.weight.numel() for block in decoder_blocks(model) for linear in block_linears(block).values())


def prune_decoder_structured(model: nn.Module, calibration_ids: Tensor, method: BudgetedMethod,
                             settings: OneShotSettings = OneShotSettings(), log: Callable[[str], None] = print) -> dict:
    """Structured K-prune or Kwon et al. to ``keep_ratio`` of the decoder FLOPs at the calibration window length,
    then slice the model in place (key/value groups and MLP channels removed, Kwon's tuned mask values folded into
    the output projections; it becomes a ``PrunedLlamaForCausalLM``)."""
    from lmshrink.pruning.decoder.kprune import decoder_kprune
    from lmshrink.pruning.decoder.kwon import decoder_kwon
    from lmshrink.pruning.decoder.structure import decoder_flops, decoder_shape, slice_decoder

    STRUCTURED = {KPrune: decoder_kprune, Kwon: decoder_kwon}

    shape = decoder_shape(model)
    weights_before = _block_weights(model)
    ids = calibration_ids.to(next(model.parameters()).device)
    batches = [{"input_ids": ids[start:start + settings.batch_size],
                "attention_mask": torch.ones_like(ids[start:start + settings.batch_size])}
               for start in range(0, len(ids), settings.batch_size)]
    keep_ratio = method.flops_keep_ratio
    prune = STRUCTURED[type(method)]
    result = prune(model, batches, keep_ratio, float(settings.seq_len))
    groups = [int(count) for count in (result.group_mask != 0).sum(1)]
    channels = [int(count) for count in (result.channel_mask != 0).sum(1)]
    slice_decoder(model, result.group_mask, result.channel_mask)
    weights_after = _block_weights(model)
    log(f"[lmshrink] {method.name}: kept {sum(groups)}/{shape.num_groups * shape.num_layers} key/value groups and "
        f"{sum(channels)}/{shape.channels * shape.num_layers} MLP channels, {result.seconds:.0f} s")
    details = ({"steps": result.steps} if isinstance(method, KPrune) else
               {"tuned": [f"{kind} {layer}" for layer, kind in result.tuned],
                "tuning_stopped_at": None if result.stopped_at is None else "{1} {0}".format(*result.stopped_at)})
    return {"method": method.name, "options": method.options(), "structured": True, "flops_keep_ratio_target": keep_ratio,
            "seq_len": settings.seq_len,
            "flops_kept": (decoder_flops(shape, settings.seq_len, groups, channels)
                           / decoder_flops(shape, settings.seq_len)),
            "groups_per_layer": groups, "channels_per_layer": channels,
            "sparsity_reached": 1 - weights_after / weights_before, **details,
            "calibration": list(calibration_ids.shape), "pruning_seconds": result.seconds}
