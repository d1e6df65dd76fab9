"""Spec §7.2, 7.6, 7.7: budgets hold for random scores, the threshold rule and nesting, Kwon's search is the
brute-force optimum, and the official scan's always-prune-the-minimum quirk."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lmshrink.pruning.search import kwon_search, threshold_keep


def random_candidates(seed: int, count: int = 60):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(count, generator=generator)
    costs = torch.where(torch.rand(count, generator=generator) < 0.2, 13.0, 0.5).double()  # heads and neurons
    return scores, costs


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ratio", [1.0, 0.9, 0.5, 0.21, 0.05])
@pytest.mark.parametrize("faithful", [False, True])
def test_threshold_respects_budget(seed, ratio, faithful):
    scores, costs = random_candidates(seed)
    budget = ratio * float(costs.sum())
    keep = threshold_keep(scores, costs, budget, faithful=faithful)
    assert float(costs[keep].sum()) <= budget + 1e-9
    if faithful:
        assert not keep[scores.argmin()]  # official quirk: the minimum goes, even at ratio 1
    elif ratio == 1.0:
        assert keep.all()  # paper semantics: nothing pruned when the budget does not bind


@pytest.mark.parametrize("seed", range(5))
def test_kept_units_outscore_pruned_ones_and_sets_nest(seed):
    scores, costs = random_candidates(seed)
    previous = None
    for ratio in (0.9, 0.7, 0.5, 0.3, 0.1):
        keep = threshold_keep(scores, costs, ratio * float(costs.sum()))
        if keep.any() and (~keep).any():
            assert scores[keep].min() >= scores[~keep].max()
        if previous is not None:
            assert not (keep & ~previous).any()  # kept sets shrink as the ratio decreases
        previous = keep


def brute_force(head_importance, neuron_importance, budget, head_cost, neuron_cost):
    heads = torch.sort(head_importance.flatten(), descending=True).values.double()
    neurons = torch.sort(neuron_importance.flatten(), descending=True).values.double()
    best = -math.inf
    for h, k in itertools.product(range(heads.numel() + 1), range(neurons.numel() + 1)):
        if h * head_cost + k * neuron_cost <= budget:
            best = max(best, float(heads[:h].sum() + neurons[:k].sum()))
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", [0.8, 0.5, 0.2])
def test_kwon_search_equals_brute_force(seed, ratio):
    generator = torch.Generator().manual_seed(seed)
    head_importance, neuron_importance = torch.rand(2, 3, generator=generator), torch.rand(2, 8, generator=generator)
    head_cost, neuron_cost = 5.0, 1.0
    budget = ratio * (6 * head_cost + 16 * neuron_cost)
    head_keep, neuron_keep = kwon_search(head_importance, neuron_importance, budget, head_cost, neuron_cost)
    assert int(head_keep.sum()) * head_cost + int(neuron_keep.sum()) * neuron_cost <= budget + 1e-9
    total = float(head_importance[head_keep].sum() + neuron_importance[neuron_keep].sum())
    assert total == pytest.approx(brute_force(head_importance, neuron_importance, budget, head_cost, neuron_cost))


def test_kwon_search_keeps_everything_at_ratio_one():
    head_keep, neuron_keep = kwon_search(torch.rand(2, 3), torch.rand(2, 8), 6 * 5.0 + 16, 5.0, 1.0)
    assert head_keep.all() and neuron_keep.all()
