"""Intervals and tests against independent implementations (scipy) or values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest

from lmshrink.metrics.significance import bootstrap_intervals, holm, mcnemar_exact_p, wilson_interval


@pytest.mark.parametrize("successes, total", [(3, 5), (0, 16), (16, 16), (1, 3), (57, 100), (900, 1000)])
def test_wilson_interval_equals_scipy(successes, total):
    expected = binomtest(successes, total).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, total)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)
    assert all(math.isnan(value) for value in wilson_interval(0, 0))  # no examples, no interval


@pytest.mark.parametrize("b, c", [(0, 2), (1, 1), (0, 9), (3, 12), (25, 10), (40, 40), (0, 0)])
def test_exact_mcnemar_is_the_two_sided_binomial_test_on_discordant_pairs(b, c):
    expected = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact_p(0, 2) == 0.5  # by hand: 2 * P(X = 0 | n = 2) = 2 / 4


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> monotone 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[4])
    assert holm([0.6, 0.5]) == [1.0, 1.0]  # capped at 1


def test_bootstrap_is_seeded_paired_and_brackets_the_estimate():
    generator = torch.Generator().manual_seed(0)
    membership = torch.zeros(300, 3, dtype=torch.bool)
    membership[:200, 0], membership[200:280, 1], membership[280:, 2] = True, True, True
    correct = torch.rand(300, generator=generator) < torch.tensor([0.9] * 200 + [0.7] * 80 + [0.5] * 20)
    first = bootstrap_intervals(correct, membership, correct.clone(), resamples=400, seed=5)
    again = bootstrap_intervals(correct, membership, correct.clone(), resamples=400, seed=5)
    assert first == again  # seeded: reproducible
    # paired: a reference identical to the model differs by exactly 0 in every resample (unpaired would not)
    assert all(interval == (0.0, 0.0) for interval in first.group_delta)
    worst = min(float(correct[membership[:, g]].float().mean()) for g in range(3))
    low, high = first.worst_group_acc
    assert low < worst < high
    # a group of 20 at p=0.5: the bootstrap interval is about as wide as the binomial one (+-0.22)
    group_low, group_high = wilson_interval(int(correct[280:].sum()), 20)
    assert high - low == pytest.approx(group_high - group_low, rel=0.35)
    shifted = correct.clone()
    shifted[:100] = True  # the model right on 100 more examples of group 0 than the reference
    delta = bootstrap_intervals(shifted, membership, correct, resamples=400, seed=5).group_delta
    assert delta[0][0] > 0 and delta[1] == (0.0, 0.0)


def test_bootstrap_equals_a_numpy_loop_over_the_same_draws():
    """The same resampled indices (torch's seeded generator, drawn in the same chunks), counted in plain numpy."""
    import numpy as np

    generator = torch.Generator().manual_seed(1)
    n, resamples, chunk = 40, 30, 100
    membership = torch.zeros(n, 2, dtype=torch.bool)
    membership[:25, 0], membership[25:, 1] = True, True
    correct = torch.rand(n, generator=generator) < 0.7
    reference = torch.rand(n, generator=generator) < 0.7
    ours = bootstrap_intervals(correct, membership, reference, resamples=resamples, seed=9, chunk=chunk)
    draws = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(9)).numpy()
    member, right, reference_right = membership.numpy(), correct.numpy(), reference.numpy()
    worst, deltas = [], []
    for sample in draws:
        accuracy = [right[sample][member[sample, g]].mean() for g in range(2)]
        reference_accuracy = [reference_right[sample][member[sample, g]].mean() for g in range(2)]
        worst.append(min(accuracy))
        deltas.append([a - r for a, r in zip(accuracy, reference_accuracy)])
    assert ours.worst_group_acc == pytest.approx(tuple(np.quantile(worst, [0.025, 0.975])), abs=1e-12)
    for g in range(2):
        column = [row[g] for row in deltas]
        assert ours.group_delta[g] == pytest.approx(tuple(np.quantile(column, [0.025, 0.975])), abs=1e-12)
