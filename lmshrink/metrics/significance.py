"""How sure a per-group number is: intervals and paired tests for groups of a few dozen examples.

A group of 16 examples moves 6 points with one example, so a per-group accuracy or delta is reported with its
uncertainty:

- :func:`wilson_interval`: the Wilson score interval of a group's accuracy (good at small n and near 0 / 1,
  where the normal approximation is not).
- :func:`mcnemar_exact_p`: the exact McNemar test of a paired accuracy change (model vs reference on the same
  examples): a two-sided binomial test on the discordant pairs, as statsmodels' ``mcnemar(exact=True)``.
- :func:`holm`: Holm's step-down correction over the groups (family-wise error), as statsmodels'
  ``multipletests(method="holm")``.
- :func:`bootstrap_intervals`: seeded percentile bootstrap over examples for the worst-group accuracy and,
  paired (the same resampled examples for both models), for each group's delta to the reference.

Plain PyTorch and ``math``; the inputs are the counts and per-example outcomes the metrics gather (exact under
DDP), so every rank computes the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

Z_95 = 1.959963984540054
"""The 97.5 % quantile of the standard normal: a two-sided 95 % interval."""


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of ``successes / total``; ``(nan, nan)`` when ``total`` is 0."""
    if total <= 0:
        return math.nan, math.nan
    p = successes / total
    denominator = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(model_only_correct: int, reference_only_correct: int) -> float:
    """Two-sided exact McNemar p-value: ``P(X <= min(b, c)) * 2`` for ``X ~ Binomial(b + c, 1/2)``, capped at 1;
    1 when there is no discordant pair (no evidence of a change)."""
    b, c = int(model_only_correct), int(reference_only_correct)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values in the input order; NaN entries (absent groups) stay NaN and are not counted."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(tested)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


@dataclass
class BootstrapIntervals:
    """Percentile intervals (``level``, default 95 %) from ``resamples`` seeded resamples of the examples."""

    worst_group_acc: tuple[float, float]
    group_delta: list[tuple[float, float]]
    """Per group: interval of model accuracy minus reference accuracy (paired); empty without a reference."""
    resamples: int


def percentile_interval(values: Tensor, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of resampled values, NaN resamples left out; ``(nan, nan)`` if none is finite."""
    finite = values[~torch.isnan(values)]
    if finite.numel() == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = torch.quantile(finite, torch.tensor([tail, 1 - tail], dtype=finite.dtype))
    return float(low), float(high)


def bootstrap_intervals(correct: Tensor, membership: Tensor, reference_correct: Tensor | None = None,
                        resamples: int = 1000, seed: int = 0, level: float = 0.95,
                        chunk: int = 100) -> BootstrapIntervals:
    """Percentile bootstrap over examples.

    Args:
        correct: ``[N]`` bool, the model's prediction is right; in a fixed example order (the metrics sort by
            dataset index, so the resamples are the same however the examples were sharded).
        membership: ``[N, G]`` bool group membership.
        reference_correct: ``[N]`` bool for the reference model: then each group's delta is resampled paired.
        resamples: Number of bootstrap resamples; ``seed`` makes them reproducible.
        chunk: Resamples drawn at once (bounds memory at ``chunk * N``).

    A resample in which a group has no example leaves that group out of that resample's worst group and delta.
    """
    n, num_groups = membership.shape
    generator = torch.Generator().manual_seed(seed)
    member = membership.double().cpu()
    hits = correct.double().cpu()[:, None] * member
    reference_hits = reference_correct.double().cpu()[:, None] * member if reference_correct is not None else None
    present = membership.any(0).cpu()
    worst, deltas = [], []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = torch.randint(n, (size, n), generator=generator)
        counts = torch.zeros(size, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(size, n, dtype=torch.float64))
        totals = counts @ member  # [size, G]
        accuracy = torch.where(totals > 0, (counts @ hits) / totals.clamp(min=1), torch.nan)
        accuracy[:, ~present] = torch.nan
        worst.append(torch.where(torch.isnan(accuracy), torch.inf, accuracy).amin(1).masked_fill(
            torch.isnan(accuracy).all(1), torch.nan))
        if reference_hits is not None:
            reference_accuracy = torch.where(totals > 0, (counts @ reference_hits) / totals.clamp(min=1), torch.nan)
            deltas.append(accuracy - reference_accuracy)
    group_delta = []
    if deltas:
        stacked = torch.cat(deltas)
        group_delta = [percentile_interval(stacked[:, g], level) for g in range(num_groups)]
    return BootstrapIntervals(percentile_interval(torch.cat(worst), level), group_delta, resamples)
