"""Mask searches under a FLOPs budget: K-prune's global threshold (KPMS, spec §3.3) and Kwon et al.'s
head/neuron split (spec §2.2). Plain tensors in, boolean keep-masks out."""

from __future__ import annotations

import math

import torch
from torch import Tensor

BUDGET_SLACK = 1e-9
"""Relative float tolerance on the budget, so that keep ratio 1 keeps every unit despite rounding of sums."""


def threshold_keep(scores: Tensor, costs: Tensor, budget: float, faithful: bool = False) -> Tensor:
    """Which candidates survive the global threshold.

    Corrected (paper Algorithm 1): sort by score, descending (ties: lower index first), and keep the longest
    prefix whose summed FLOPs fit ``budget``. ``faithful=True`` reproduces the official scan: the lowest
    threshold ``nu`` among the scores with ``FLOPs(score > nu) < budget``, which always prunes the minimum.
    """
    if scores.shape != costs.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and costs {tuple(costs.shape)} differ in shape")
    scores, costs = scores.double(), costs.double()
    if not faithful:
        order = torch.sort(-scores, stable=True).indices
        fits = torch.cumsum(costs[order], 0) <= budget * (1 + BUDGET_SLACK)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep[order[: int(fits.sum())]] = True  # cumsum is increasing: the fitting entries are a prefix
        return keep
    ascending = torch.sort(scores, stable=True).values
    for threshold in ascending.unique():
        keep = scores > threshold
        if costs[keep].sum() < budget:
            return keep
    return torch.zeros_like(scores, dtype=torch.bool)


def kwon_search(head_importance: Tensor, neuron_importance: Tensor, budget: float, head_cost: float,
                neuron_cost: float, faithful: bool = False) -> tuple[Tensor, Tensor]:
    """Kwon et al.'s search: for every head count h, fill the rest of the budget with the best neurons; keep the
    (h, k) with the largest summed importance. Exact for the diagonal model since all heads (and all neurons)
    cost the same. Returns keep-masks shaped like the inputs. The official code starts at h = 1; the corrected
    mode also tries h = 0 (all budget to neurons)."""
    head_sorted, head_order = torch.sort(head_importance.flatten().double(), descending=True, stable=True)
    neuron_sorted, neuron_order = torch.sort(neuron_importance.flatten().double(), descending=True, stable=True)
    head_total = torch.cat([head_sorted.new_zeros(1), torch.cumsum(head_sorted, 0)])
    neuron_total = torch.cat([neuron_sorted.new_zeros(1), torch.cumsum(neuron_sorted, 0)])
    best, best_pair = -math.inf, (0, 0)
    for heads in range(0 if not faithful else 1, head_sorted.numel() + 1):
        left = budget * (1 + BUDGET_SLACK) - heads * head_cost
        if left < 0:
            break
        neurons = min(neuron_sorted.numel(), math.floor(left / neuron_cost))
        total = float(head_total[heads] + neuron_total[neurons])
        if total > best:
            best, best_pair = total, (heads, neurons)
    head_keep = torch.zeros(head_importance.numel(), dtype=torch.bool)
    head_keep[head_order[: best_pair[0]]] = True
    neuron_keep = torch.zeros(neuron_importance.numel(), dtype=torch.bool)
    neuron_keep[neuron_order[: best_pair[1]]] = True
    return head_keep.view_as(head_importance), neuron_keep.view_as(neuron_importance)


def rearrange(gradients: Tensor, keep: Tensor) -> Tensor:
    """Per-layer greedy swap under the block-diagonal Fisher (spec §2.3). ``gradients`` ``[B, U]`` of one layer,
    ``keep`` ``[U]`` bool; returns a keep-mask with the same number of pruned units whose pruned set P has
    ``||sum_{u in P} G[:, u]||^2`` no larger than the initial diagonal choice's."""
    num_pruned = int((~keep).sum())
    if num_pruned == 0 or num_pruned == keep.numel():
        return keep.clone()
    gradients = gradients.double()
    diagonal = gradients.pow(2).sum(0)
    order = torch.argsort(diagonal, stable=True)
    pruned = order[:num_pruned].tolist()
    total = gradients[:, pruned].sum(1)
    for unit in order[num_pruned:].tolist():
        candidate = total + gradients[:, unit]
        members = pruned + [unit]
        # objective after dropping each member v: ||candidate - G[:, v]||^2
        objective = (candidate[:, None] - gradients[:, members]).pow(2).sum(0)
        drop = int(torch.argmin(objective))
        total = candidate - gradients[:, members[drop]]
        pruned = members[:drop] + members[drop + 1:]
    new_keep = torch.ones_like(keep)
    new_keep[pruned] = False
    return new_keep
