"""Intervals and tests against independent implementations (scipy) or values worked out by hand."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from lmshrink.metrics.significance import (
    _tango_statistic,
    clopper_pearson,
    holm,
    mcnemar_exact_p,
    tango_interval,
    wilson_interval,
    worst_group_interval,
)


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


@pytest.mark.parametrize("b, c, n, expected", [
    (1, 7, 21, (-0.5172, -0.0260)),  # Bentur et al. 2009, Fagerland, Lydersen & Laake (2017) table 8.6: Tango
    (6, 16, 161, (-0.1240, -0.0054)),  # Cavo et al. 2012, the same book's second example
])
def test_tango_interval_equals_the_published_examples(b, c, n, expected):
    low, high = tango_interval(b, c, n)
    assert (round(low, 4), round(high, 4)) == expected


@pytest.mark.parametrize("b, c, n", [(0, 0, 16), (1, 0, 16), (3, 9, 40), (40, 20, 160), (16, 0, 16), (0, 5, 5)])
def test_tango_limits_are_where_the_score_test_just_rejects(b, c, n):
    """An independent check of the bisection: at each finite limit the score statistic equals -+z (scipy's root
    finder on the same statistic agrees), the estimate lies inside, and no-discordance gives a two-sided interval
    (the bootstrap's [0, 0] was the defect of issue 28)."""
    from scipy.optimize import brentq

    low, high = tango_interval(b, c, n)
    assert low <= (b - c) / n <= high
    z = 1.959963984540054
    for limit, target in ((low, z), (high, -z)):
        if abs(limit) < 1:
            assert _tango_statistic(b, c, n, limit) == pytest.approx(target, abs=1e-6)
            root = brentq(lambda d: _tango_statistic(b, c, n, d) - target, -1 + 1e-12, 1 - 1e-12, xtol=1e-14)
            assert limit == pytest.approx(root, abs=1e-9)
    if b == c == 0:
        assert low == pytest.approx(-high) and high == pytest.approx(z**2 / (n + z**2))


def test_clopper_pearson_equals_scipy_and_the_worst_group_interval_takes_minima():
    for k, n in [(0, 16), (12, 16), (16, 16), (57, 100)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert clopper_pearson(k, n, 0.05) == pytest.approx((expected.low, expected.high), abs=1e-12)
    # three groups: each interval at 1 - 0.05/3; the minimum's interval is [min of lows, min of highs]
    parts = [binomtest(k, n).proportion_ci(confidence_level=1 - 0.05 / 3, method="exact")
             for k, n in [(12, 16), (30, 40), (90, 100)]]
    low, high = worst_group_interval([12, 30, 90, 0], [16, 40, 100, 0])  # an empty group is left out
    assert (low, high) == pytest.approx((min(p.low for p in parts), min(p.high for p in parts)), abs=1e-12)
    assert all(math.isnan(value) for value in worst_group_interval([0], [0]))


def test_exact_mcnemar_equals_the_exact_sum_and_scipy_at_twenty_thousand_pairs():
    """The exact value, as a sum of binomial coefficients in integers (the former implementation), against the CDF:
    the same to 1e-12 (relative). The former took about 3 minutes at this size; benchmarks/significance.py times
    both side by side."""
    from fractions import Fraction

    b, c = 2_900, 3_100
    n = b + c
    exact = Fraction(2 * sum(math.comb(n, i) for i in range(b + 1)), 2**n)
    assert mcnemar_exact_p(b, c) == pytest.approx(float(exact), rel=1e-12)
    assert mcnemar_exact_p(20_000, 20_500) == pytest.approx(binomtest(20_000, 40_500).pvalue, rel=1e-9)
