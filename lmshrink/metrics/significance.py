"""How sure a per-group number is: intervals and paired tests for groups of a few dozen examples.

A group of 16 examples moves 6 points with one example, so a per-group accuracy or delta is reported with its
uncertainty, each by a method whose coverage is known at such sizes (the issue-28 simulation showed that the
percentile bootstrap used before covered a "95 %" delta in 52 % of cases at n = 16 with 5 % discordant pairs,
and the worst group in 73 % when three groups tie):

- :func:`wilson_interval`: the Wilson score interval of a group's accuracy (good at small n and near 0 / 1,
  where the normal approximation is not).
- :func:`tango_interval`: Tango's (1998) score interval of a paired difference of accuracies (model minus
  reference on the same examples). Exact coverage at n = 16 (enumerated in ``tests/metrics/test_coverage.py``):
  >= 0.995 with 5 % discordant pairs; its known low is 0.92-0.93 when nearly every pair is discordant.
- :func:`worst_group_interval`: the minimum over groups needs simultaneous intervals (a per-group 95 % interval
  of the group that happens to be lowest is biased low): Clopper-Pearson intervals at level ``1 - alpha / G``
  (Bonferroni), whose minima bound the true minimum with probability >= 95 % by construction.
- :func:`mcnemar_exact_p`: the exact McNemar test of a paired accuracy change: a two-sided binomial test on the
  discordant pairs, as statsmodels' ``mcnemar(exact=True)``, through the binomial CDF (milliseconds at 20,000
  pairs, where a sum of binomial coefficients took minutes).
- :func:`holm`: Holm's step-down correction over the groups (family-wise error), as statsmodels'
  ``multipletests(method="holm")``.

The inputs are counts the metrics sum across ranks (exact under DDP), so every rank computes the same numbers.
:func:`percentile_interval` stays for the statistics without a closed form (entity F1, generative scores), which
are resampled elsewhere.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import beta, binom
from torch import Tensor

Z_95 = 1.959963984540054
"""The 97.5 % quantile of the standard normal: a two-sided 95 % interval."""

METHODS = {"ci": "Wilson score 95 %", "delta_ci": "Tango score 95 % (paired)",
           "worst_group_acc_ci": "simultaneous Clopper-Pearson 95 % (Bonferroni over the groups)",
           "p_value": "exact McNemar", "p_holm": "exact McNemar, Holm-corrected over the groups"}
"""Which method each reported interval and p-value uses (written into the records and the tables)."""


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of ``successes / total``; ``(nan, nan)`` when ``total`` is 0."""
    if total <= 0:
        return math.nan, math.nan
    p = successes / total
    denominator = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _tango_statistic(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: difference = ``delta``, with the restricted maximum-likelihood estimate of
    the probability of a reference-only success (Tango 1998, eq. 4; Fagerland, Lydersen & Laake 2013)."""
    a_, b_ = 2 * n, -b - c + (2 * n - b + c) * delta
    c_ = -c * delta * (1 - delta)
    p21 = (math.sqrt(max(b_ * b_ - 4 * a_ * c_, 0.0)) - b_) / (2 * a_)
    numerator, variance = b - c - n * delta, n * (2 * p21 + delta * (1 - delta))
    if variance <= 0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def tango_interval(model_only_correct: int, reference_only_correct: int, total: int,
                   z: float = Z_95) -> tuple[float, float]:
    """Tango's score interval of ``(b - c) / n``, the model's accuracy minus the reference's on the same ``n``
    examples (``b`` right only for the model, ``c`` only for the reference): every difference the score test does
    not reject. The statistic falls as the difference grows, so each limit is found by bisection. No discordant
    pair still gives an interval of width about ``2 z^2 / (n + z^2)``, not ``[0, 0]``."""
    b, c, n = int(model_only_correct), int(reference_only_correct), int(total)
    if n <= 0:
        return math.nan, math.nan

    def limit(target: float) -> float:
        low, high = -1.0, 1.0
        for _ in range(64):  # 2^-64 of the range: below float precision
            middle = (low + high) / 2
            low, high = (middle, high) if _tango_statistic(b, c, n, middle) > target else (low, middle)
        return (low + high) / 2

    estimate = (b - c) / n
    return (-1.0 if estimate == -1 else limit(z)), (1.0 if estimate == 1 else limit(-z))


def clopper_pearson(successes: int, total: int, alpha: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of ``successes / total`` at level ``1 - alpha``: coverage >= the level
    for every true proportion."""
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, total - successes + 1))
    high = 1.0 if successes == total else float(beta.ppf(1 - alpha / 2, successes + 1, total - successes))
    return low, high


def worst_group_interval(correct: list[int], totals: list[int], level: float = 0.95) -> tuple[float, float]:
    """Interval of the lowest group accuracy: ``[min of lower limits, min of upper limits]`` of simultaneous
    Clopper-Pearson intervals (each at ``1 - (1 - level) / G`` over the ``G`` groups with examples). When every
    group's interval holds (probability >= ``level``, Bonferroni), the true minimum lies in it. ``(nan, nan)``
    when no group has an example."""
    present = [(k, n) for k, n in zip(correct, totals) if n > 0]
    if not present:
        return math.nan, math.nan
    intervals = [clopper_pearson(k, n, (1 - level) / len(present)) for k, n in present]
    return min(low for low, _ in intervals), min(high for _, high in intervals)


def mcnemar_exact_p(model_only_correct: int, reference_only_correct: int) -> float:
    """Two-sided exact McNemar p-value: ``P(X <= min(b, c)) * 2`` for ``X ~ Binomial(b + c, 1/2)``, capped at 1;
    1 when there is no discordant pair (no evidence of a change). The CDF is scipy's regularized incomplete beta
    (relative error ~1e-15), not a sum of ``b + c`` binomial coefficients."""
    b, c = int(model_only_correct), int(reference_only_correct)
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * float(binom.cdf(min(b, c), n, 0.5)))


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


def percentile_interval(values: Tensor, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of resampled values, NaN resamples left out; ``(nan, nan)`` if none is finite."""
    finite = values[~torch.isnan(values)]
    if finite.numel() == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = torch.quantile(finite, torch.tensor([tail, 1 - tail], dtype=finite.dtype))
    return float(low), float(high)
