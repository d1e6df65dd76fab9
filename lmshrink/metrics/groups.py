"""Per-group accuracy, worst-group accuracy, group gap and macro-F1 as one torchmetrics ``Metric``.

The states are integer counts (per-group correct/total and a confusion matrix) reduced with ``sum``, so
under DDP every rank's counts are added *before* any division: the result is exactly the single-process
result, whatever the shard sizes. Groups may overlap (WILDS CivilComments puts one comment in several
identity groups), so membership is a boolean matrix; disjoint group ids are accepted and one-hot encoded.
"""

from __future__ import annotations

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor
from torchmetrics import Metric

IGNORE_INDEX = -100
"""Target value of rows that must not count (padding added to even out DDP shards), as in PyTorch's CE loss."""


def group_metrics_from_counts(group_correct: Tensor, group_total: Tensor, confusion: Tensor) -> dict[str, Tensor]:
    """Turn summed counts into the reported metrics.

    Args:
        group_correct: ``[G]`` correct predictions per group.
        group_total: ``[G]`` examples per group; 0 means the group is absent from this split.
        confusion: ``[C, C]`` counts, rows = target class, columns = predicted class.

    Returns:
        ``group_acc`` ``[G]`` (NaN for absent groups: absent is not 0 %), ``group_present`` ``[G]`` bool,
        ``group_total`` and ``group_correct`` ``[G]`` (the counts themselves: under DDP the metric's own states
        are per-rank again once ``compute`` returns),
        ``avg_acc`` (over all examples), ``worst_group_acc`` and ``group_gap`` (best minus worst group,
        over present groups; NaN if none is present), and ``macro_f1`` (mean F1 over classes that occur
        as target or prediction, the scikit-learn convention).
    """
    present = group_total > 0
    group_acc = torch.where(present, group_correct.double() / group_total.clamp(min=1), torch.nan)
    total = confusion.sum()
    avg_acc = confusion.diagonal().sum().double() / total if total > 0 else torch.tensor(torch.nan, dtype=torch.float64)
    if present.any():
        worst = group_acc[present].min()
        gap = group_acc[present].max() - worst
    else:
        worst = gap = torch.tensor(torch.nan, dtype=torch.float64)
    true_pos = confusion.diagonal().double()
    support = confusion.sum(dim=1).double()
    predicted = confusion.sum(dim=0).double()
    occurs = (support + predicted) > 0
    f1 = 2 * true_pos / (support + predicted).clamp(min=1)
    macro_f1 = f1[occurs].mean() if occurs.any() else torch.tensor(torch.nan, dtype=torch.float64)
    return {
        "group_acc": group_acc,
        "group_present": present,
        "group_total": group_total,
        "group_correct": group_correct,
        "avg_acc": avg_acc,
        "worst_group_acc": worst,
        "group_gap": gap,
        "macro_f1": macro_f1,
    }


def on_cpu(results):
    """A metric's ``compute()`` results (tensors in dicts / lists) moved to the CPU."""
    return apply_to_collection(results, Tensor, Tensor.cpu)


def count_by_rows(rows: Tensor, values: Tensor) -> Tensor:
    """``rows.T @ values`` for 0/1 ``rows`` ``[B, R]`` and integer ``values`` ``[B]`` or ``[B, K]``, as exact integer
    counts on any device: CUDA has no integer matrix product, so it is taken in float64 (exact below 2**53) and
    rounded back."""
    return (rows.T.double() @ values.double()).round().long()


def as_membership(groups: Tensor, num_groups: int) -> Tensor:
    """``[B]`` group ids or ``[B, G]`` membership -> ``[B, G]`` bool membership."""
    if groups.dim() == 1:
        if groups.numel() and (groups.min() < 0 or groups.max() >= num_groups):
            raise ValueError(f"group ids must lie in [0, {num_groups}); got {groups.min()}..{groups.max()}")
        return torch.nn.functional.one_hot(groups.long(), num_groups).bool()
    if groups.dim() != 2 or groups.shape[1] != num_groups:
        raise ValueError(f"group membership must have shape [batch, {num_groups}]; got {tuple(groups.shape)}")
    return groups.bool()


class GroupAccuracy(Metric):
    """Accumulates per-group and per-class counts; ``compute()`` returns :func:`group_metrics_from_counts`.

    ``update(preds, target, groups)``: ``preds`` ``[B]`` class ids or ``[B, C]`` logits, ``target`` ``[B]``
    (rows equal to :data:`IGNORE_INDEX` are skipped), ``groups`` ``[B]`` ids or ``[B, G]`` membership.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_groups: int, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_groups < 1 or num_classes < 2:
            raise ValueError(f"need num_groups >= 1 and num_classes >= 2; got {num_groups}, {num_classes}")
        self.num_groups = num_groups
        self.num_classes = num_classes
        self.add_state("group_correct", torch.zeros(num_groups, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("group_total", torch.zeros(num_groups, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        if preds.dim() == 2:
            preds = preds.argmax(dim=-1)
        keep = target != IGNORE_INDEX
        preds, target = preds[keep].long(), target[keep].long()
        membership = as_membership(groups[keep], self.num_groups)
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(f"targets must lie in [0, {self.num_classes}); got {target.min()}..{target.max()}")
        correct = (preds == target).long()
        self.group_correct += (membership.long() * correct[:, None]).sum(dim=0)
        self.group_total += membership.long().sum(dim=0)
        self.confusion += torch.bincount(
            target * self.num_classes + preds, minlength=self.num_classes**2
        ).reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        return group_metrics_from_counts(self.group_correct, self.group_total, self.confusion)
