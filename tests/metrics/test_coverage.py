"""An interval that says 95 % covers 95 % (issue 28, principle 7): the coverage of the paired delta interval and of
the worst-group interval, computed exactly by enumerating every outcome of a group of 16 (a CrowS/StereoSet-sized
group, the README's example), and checked once by simulation through the reporting path itself.

The settings that broke the former percentile bootstrap: n = 16 with 5 % discordant pairs (it covered 52 %; 41 %
of samples have no discordant pair and got [0, 0]), and three tied groups for the worst group (73 %)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lmshrink.metrics.beyond_accuracy import beyond_accuracy
from lmshrink.metrics.significance import tango_interval, worst_group_interval

LEVEL = 0.93  # the floor for a nominal 95 % interval


def paired_coverage(n: int, model_only: float, reference_only: float) -> float:
    """Exact coverage: the sum, over every (b, c) of a multinomial sample of n pairs, of its probability where the
    interval holds the true difference ``model_only - reference_only``."""
    truth, covered = model_only - reference_only, 0.0
    for b in range(n + 1):
        for c in range(n + 1 - b):
            probability = (math.comb(n, b) * math.comb(n - b, c) * model_only**b * reference_only**c
                           * (1 - model_only - reference_only) ** (n - b - c))
            low, high = tango_interval(b, c, n)
            covered += probability if low - 1e-12 <= truth <= high + 1e-12 else 0.0
    return covered


@pytest.mark.parametrize("model_only, reference_only", [(0.05, 0.0), (0.0, 0.05), (0.04, 0.01), (0.025, 0.025),
                                                        (0.1, 0.0), (0.2, 0.05), (0.3, 0.1)])
def test_paired_delta_interval_covers_at_n_16(model_only, reference_only):
    assert paired_coverage(16, model_only, reference_only) >= LEVEL


def test_paired_delta_interval_covers_at_n_25_with_5_percent_discordant_pairs():
    assert paired_coverage(25, 0.05, 0.0) >= LEVEL and paired_coverage(25, 0.025, 0.025) >= LEVEL


def worst_group_coverage(accuracies: list[float], sizes: list[int]) -> float:
    truth, covered = min(accuracies), 0.0
    pmfs = [[math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)] for p, n in zip(accuracies, sizes)]
    for outcome in itertools.product(*(range(n + 1) for n in sizes)):
        low, high = worst_group_interval(list(outcome), sizes)
        if low <= truth <= high:
            covered += math.prod(pmf[k] for pmf, k in zip(pmfs, outcome))
    return covered


@pytest.mark.slow
@pytest.mark.parametrize("accuracy", [0.5, 0.75, 0.9, 0.95])
def test_worst_group_interval_covers_three_tied_groups_of_16(accuracy):
    assert worst_group_coverage([accuracy] * 3, [16] * 3) >= LEVEL


def test_worst_group_interval_covers_untied_groups():
    assert worst_group_coverage([0.6, 0.65, 0.9], [16, 16, 20]) >= LEVEL


def test_simulated_coverage_through_the_reported_record():
    """The numbers a user reads (``beyond_accuracy``, as GroupMetrics and Compare report them), on 400 seeded
    simulated evaluations of three groups of 16 examples: a model that loses 5 % of one group's examples to its
    reference (5 % discordant pairs) and three tied groups."""
    generator = torch.Generator().manual_seed(0)
    trials, groups, n = 400, 3, 16
    covered_delta = covered_worst = 0
    for _ in range(trials):
        reference_right = torch.rand(groups, n, generator=generator) < 0.75  # three tied groups at 0.75
        lost = torch.rand(groups, n, generator=generator) < 0.05 / 0.75
        model_right = reference_right & ~lost  # true delta -0.05 in every group
        accuracy = {"group_present": torch.ones(groups, dtype=torch.bool),
                    "group_correct": model_right.sum(1), "group_total": torch.full((groups,), n)}
        agreement = {"group_model_only_correct": (model_right & ~reference_right).sum(1),
                     "group_reference_only_correct": (reference_right & ~model_right).sum(1),
                     "group_flip_rate": torch.zeros(groups), "group_kl_to_reference": torch.zeros(groups),
                     "flip_rate": torch.tensor(0.0), "kl_to_reference": torch.tensor(0.0),
                     "model_only_correct": torch.tensor(0), "reference_only_correct": torch.tensor(0)}
        calibration = {key: torch.zeros(groups) for key in ("group_ece", "group_brier", "group_mean_confidence")}
        calibration |= {"ece": torch.tensor(0.0), "brier": torch.tensor(0.0), "mean_confidence": torch.tensor(0.0),
                        "bin_count": torch.zeros(1), "bin_correct": torch.zeros(1), "bin_confidence": torch.zeros(1)}
        overall, rows = beyond_accuracy(["a", "b", "c"], accuracy, calibration, agreement)
        covered_delta += rows[0]["delta_ci_low"] <= -0.05 <= rows[0]["delta_ci_high"]
        low, high = overall["worst_group_acc_ci"]
        covered_worst += low <= 0.75 - 0.05 <= high
    assert covered_delta / trials >= LEVEL and covered_worst / trials >= LEVEL
    assert overall["interval_methods"]["delta_ci"].startswith("Tango")
