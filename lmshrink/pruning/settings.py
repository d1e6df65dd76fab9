"""The settings of the structured pruning methods, shared by their encoder and decoder implementations (the FLOPs
target is a separate :class:`~lmshrink.pruning.flops.FlopsBudget`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KPruneSettings:
    """K-prune's settings (spec §3.4 and §8 defaults); the FLOPs target is a separate :class:`FlopsBudget`."""

    temperature: float = 2.0
    """Temperature of the KD loss whose gradients measure predictive knowledge."""
    lam_pred: float = 1.0
    """Weight of predictive knowledge (KD-loss gradients) in a unit's score."""
    lam_rep: float = 2.5e-4
    """Weight of representational knowledge (the energy a unit's removal takes out of the sublayer output)."""
    mu: float | None = None
    """Head-vs-neuron balance; ``None`` means d_h (the official default, 64 for BERT-base)."""
    weight_tuning: bool = True
    """Least-squares re-fit of each sublayer's surviving output-projection columns (KPWT)."""
    ridge: float = 1e-6
    """Relative ridge of the corrected solve (ignored by ``faithful``)."""
    faithful: bool = False
    """Reproduce the official code's quirks (spec §3.6, §5.13) instead of the corrected mode."""


@dataclass(frozen=True)
class KwonSettings:
    """Kwon et al.'s settings; the FLOPs target is a separate :class:`FlopsBudget`."""

    rearrange: bool = True
    """Mask rearrangement: re-pick each layer's units to minimise the block-diagonal loss estimate."""
    mask_tuning: bool = True
    """Least-squares mask tuning layer by layer (stops when a scale leaves [-10, 10], the official rule)."""
    faithful: bool = False
    """Reproduce the official code's quirks (spec §5.13) instead of the corrected mode."""


SCALE_LIMIT = 10.0
"""Tuning stops when a solved scale leaves [-10, 10] (official rule)."""
