"""One-shot unstructured or N:M pruning of a causal LM's decoder Linears: magnitude, Wanda, SparseGPT.

    record = prune_decoder(model, calibration_ids, "sparsegpt", sparsity=0.5)
    record = prune_decoder(model, calibration_ids, "wanda", n_m=(2, 4))

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
from typing import Literal

import torch
from torch import Tensor, nn

from lmshrink.pruning.decoder.blocks import block_linears, decoder_blocks, first_block_inputs, run_block
from lmshrink.pruning.decoder.sparsegpt import Hessian, sparsegpt_prune
from lmshrink.pruning.sparsity_masks import n_m_mask, parse_n_m, row_mask
from lmshrink.pruning.decoder.wanda import InputNorms, wanda_scores

OneShotMethod = Literal["magnitude", "wanda", "sparsegpt"]
ONE_SHOT_METHODS = ("magnitude", "wanda", "sparsegpt")
STRUCTURED_METHODS = ("kprune", "kwon")
"""Structured decoder pruning, K-prune (:mod:`~lmshrink.pruning.decoder.kprune`) or Kwon et al.
(:mod:`~lmshrink.pruning.decoder.kwon`), specified by a FLOPs keep ratio: ``kprune-keep0.7``, ``kwon-keep0.7``."""


@dataclass(frozen=True)
class OneShotSettings:
    """Calibration and solver settings of one-shot decoder pruning (CPU defaults; the papers use 128 x 2048)."""

    num_sequences: int = 64
    """Calibration windows drawn from the calibration text (Wanda, SparseGPT)."""
    seq_len: int = 256
    """Tokens per calibration window (Wanda, SparseGPT)."""
    seed: int = 0
    """Seed of the windows' offsets (Wanda, SparseGPT)."""
    batch_size: int = 8
    """Windows per forward while streaming through the blocks (Wanda, SparseGPT)."""
    blocksize: int = 128
    """Columns per lazy-update block (SparseGPT; the official default)."""
    percdamp: float = 0.01
    """Dampening added to the Hessian's diagonal, as a share of its mean (SparseGPT; the official default)."""

    def __post_init__(self) -> None:
        for name in ("num_sequences", "seq_len", "batch_size", "blocksize"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.percdamp < 1:
            raise ValueError(f"percdamp={self.percdamp} must be in [0, 1)")


SETTINGS_READ = {"magnitude": set(), "wanda": {"num_sequences", "seq_len", "seed", "batch_size"},
                 "kprune": {"num_sequences", "seq_len", "seed", "batch_size"},
                 "kwon": {"num_sequences", "seq_len", "seed", "batch_size"},
                 "sparsegpt": {"num_sequences", "seq_len", "seed", "batch_size", "blocksize", "percdamp"}}
"""The settings each method reads: one set away from its default that no requested method reads is refused."""


def unread_settings(settings: OneShotSettings, methods: set[str]) -> list[str]:
    """Names of settings changed from their defaults that none of ``methods`` reads."""
    read = set().union(*(SETTINGS_READ[method] for method in methods))
    default = OneShotSettings()
    return [f.name for f in fields(settings) if getattr(settings, f.name) != getattr(default, f.name)
            and f.name not in read]


def parse_one_shot(spec: str) -> tuple[str, float | None, tuple[int, int] | None]:
    """``"wanda-0.5"`` -> ("wanda", 0.5, None); ``"sparsegpt-2:4"`` -> ("sparsegpt", None, (2, 4));
    ``"kprune-keep0.7"`` -> ("kprune", 0.7, None), the number being the FLOPs share *kept* (structured; also
    ``kwon-keep0.7``)."""
    method, _, amount = spec.partition("-")
    if method in STRUCTURED_METHODS:
        try:
            keep = float(amount.removeprefix("keep")) if amount.startswith("keep") else None
        except ValueError:
            keep = None
        if keep is None or not 0 < keep <= 1:
            raise ValueError(f"{spec!r}: {method} takes a FLOPs keep ratio in (0, 1], written {method}-keep0.7")
        return method, keep, None
    if method not in ONE_SHOT_METHODS or not amount:
        raise ValueError(f"{spec!r} is not <method>-<sparsity> or <method>-<N:M> with a method among "
                         f"{list(ONE_SHOT_METHODS)} (e.g. wanda-0.5, sparsegpt-2:4), or kprune-keep<ratio> / "
                         f"kwon-keep<ratio>")
    if ":" in amount:
        return method, None, parse_n_m(amount)
    try:
        sparsity = float(amount)
    except ValueError:
        raise ValueError(f"{spec!r}: {amount!r} is neither a sparsity nor an N:M pattern") from None
    if not 0 < sparsity < 1:
        raise ValueError(f"{spec!r}: sparsity must be in (0, 1)")
    return method, sparsity, None


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


@torch.no_grad()
def prune_decoder(model: nn.Module, calibration_ids: Tensor | None, method: OneShotMethod, sparsity: float | None = None,
                  n_m: tuple[int, int] | None = None, batch_size: int = 8, blocksize: int = 128,
                  percdamp: float = 0.01, log: Callable[[str], None] = print) -> dict:
    """Prune ``model`` in place; returns a record (method, pattern, sparsity reached, calibration size, seconds)."""
    if (sparsity is None) == (n_m is None):
        raise ValueError("give exactly one of sparsity and n_m")
    if method not in ONE_SHOT_METHODS:
        raise ValueError(f"method={method!r} is not one of {ONE_SHOT_METHODS}")
    if method != "magnitude" and calibration_ids is None:
        raise ValueError(f"{method} needs calibration_ids")
    start = time.perf_counter()
    blocks = decoder_blocks(model)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    try:
        inputs = None if method == "magnitude" else first_block_inputs(
            model, calibration_ids.to(next(model.parameters()).device), batch_size)
        for index, block in enumerate(blocks):
            block_start = time.perf_counter()
            linears = block_linears(block)
            if method == "magnitude":
                new = {name: magnitude_prune(linear.weight, sparsity, n_m) for name, linear in linears.items()}
            else:
                stats = {name: (InputNorms if method == "wanda" else Hessian)(linear.in_features)
                         for name, linear in linears.items()}
                handles = [linear.register_forward_hook(lambda module, args, output, s=stats[name]: s.add(args[0]))
                           for name, linear in linears.items()]
                try:
                    run_block(block, inputs)
                finally:
                    for handle in handles:
                        handle.remove()
                if method == "wanda":
                    new = {name: wanda_prune(linear.weight, stats[name], sparsity, n_m)
                           for name, linear in linears.items()}
                else:
                    new = {name: sparsegpt_prune(linear.weight, stats[name].matrix, sparsity, n_m, blocksize, percdamp)
                           for name, linear in linears.items()}
            for name, linear in linears.items():
                linear.weight.copy_(new[name])
            if inputs is not None:
                inputs.hidden = run_block(block, inputs)  # the next block sees this pruned block's outputs
            log(f"[lmshrink] {method} block {index + 1}/{len(blocks)}: {len(linears)} Linears pruned, "
                f"{time.perf_counter() - block_start:.1f} s")
    finally:
        model.config.use_cache = use_cache
    return {"method": method, "sparsity": sparsity, "n_m": None if n_m is None else f"{n_m[0]}:{n_m[1]}",
            "sparsity_reached": decoder_sparsity(model),
            "calibration": None if calibration_ids is None else list(calibration_ids.shape),
            "pruning_seconds": time.perf_counter() - start}


def prune_decoder_spec(model: nn.Module, spec: str, calibration: Callable[[], Tensor],
                       settings: OneShotSettings = OneShotSettings(), log: Callable[[str], None] = print) -> dict:
    """:func:`prune_decoder` from a spec such as ``wanda-0.5`` or ``sparsegpt-2:4`` and its settings;
    ``calibration()`` is only called for the methods that read data (not magnitude). ``kprune-keep0.7`` /
    ``kwon-keep0.7``: structured K-prune / Kwon et al., the model physically sliced in place (see
    :func:`prune_decoder_structured`)."""
    method, sparsity, n_m = parse_one_shot(spec)
    if method in STRUCTURED_METHODS:
        return prune_decoder_structured(model, calibration(), method, sparsity, settings, log)
    return prune_decoder(model, None if method == "magnitude" else calibration(), method, sparsity, n_m,
                         settings.batch_size, settings.blocksize, settings.percdamp, log)


def _block_weights(model: nn.Module) -> int:
    """Weights of the decoder blocks' Linear layers (what structured pruning removes)."""
    return sum(linear.weight.numel() for block in decoder_blocks(model) for linear in block_linears(block).values())


def prune_decoder_structured(model: nn.Module, calibration_ids: Tensor, method: Literal["kprune", "kwon"],
                             keep_ratio: float, settings: OneShotSettings = OneShotSettings(),
                             log: Callable[[str], None] = print) -> dict:
    """Structured K-prune or Kwon et al. to ``keep_ratio`` of the decoder FLOPs at the calibration window length,
    then slice the model in place (key/value groups and MLP channels removed, Kwon's tuned mask values folded into
    the output projections; it becomes a ``PrunedLlamaForCausalLM``)."""
    from lmshrink.pruning.decoder.kprune import decoder_kprune
    from lmshrink.pruning.decoder.kwon import decoder_kwon
    from lmshrink.pruning.decoder.structure import decoder_flops, decoder_shape, slice_decoder

    shape = decoder_shape(model)
    weights_before = _block_weights(model)
    ids = calibration_ids.to(next(model.parameters()).device)
    batches = [{"input_ids": ids[start:start + settings.batch_size],
                "attention_mask": torch.ones_like(ids[start:start + settings.batch_size])}
               for start in range(0, len(ids), settings.batch_size)]
    prune = decoder_kprune if method == "kprune" else decoder_kwon
    result = prune(model, batches, keep_ratio, float(settings.seq_len))
    groups = [int(count) for count in (result.group_mask != 0).sum(1)]
    channels = [int(count) for count in (result.channel_mask != 0).sum(1)]
    slice_decoder(model, result.group_mask, result.channel_mask)
    weights_after = _block_weights(model)
    log(f"[lmshrink] {method}: kept {sum(groups)}/{shape.num_groups * shape.num_layers} key/value groups and "
        f"{sum(channels)}/{shape.channels * shape.num_layers} MLP channels, {result.seconds:.0f} s")
    details = ({"steps": result.steps} if method == "kprune" else
               {"tuned": [f"{kind} {layer}" for layer, kind in result.tuned],
                "tuning_stopped_at": None if result.stopped_at is None else "{1} {0}".format(*result.stopped_at)})
    return {"method": method, "structured": True, "flops_keep_ratio_target": keep_ratio,
            "seq_len": settings.seq_len,
            "flops_kept": (decoder_flops(shape, settings.seq_len, groups, channels)
                           / decoder_flops(shape, settings.seq_len)),
            "groups_per_layer": groups, "channels_per_layer": channels,
            "sparsity_reached": 1 - weights_after / weights_before, **details,
            "calibration": list(calibration_ids.shape), "pruning_seconds": result.seconds}
