"""Per-group calibration as one torchmetrics ``Metric``: expected calibration error, Brier score, confidence.

ECE is torchmetrics' ``MulticlassCalibrationError`` (top-label, ``n_bins`` equal-width bins, L1; the tests use
it as the reference): confidences go to bin ``bucketize(conf, linspace(0, 1, n_bins + 1), right=True) - 1``
(a confidence of exactly 1 gets a bin of its own, as there), and

    ECE = sum_b |correct_b - confidence_sum_b| / N

which is the usual ``sum_b (n_b / N) |acc_b - conf_b|`` written with sums. The states are those sums per group
and bin, reduced with ``sum``: under DDP every rank's sums are added before any division, so the result is
the single-process one (up to float summation order). Groups may overlap, as in :mod:`lmshrink.metrics.groups`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lmshrink.metrics.groups import IGNORE_INDEX, as_membership, count_by_rows

N_BINS = 15


def calibration_from_sums(bin_count: Tensor, bin_correct: Tensor, bin_confidence: Tensor, brier_sum: Tensor
                          ) -> dict[str, Tensor]:
    """ECE, Brier score and mean confidence from summed states of shape ``[..., n_bins + 1]`` (bins) and
    ``[...]`` (Brier); NaN where nothing was counted."""
    total = bin_count.sum(-1).double()
    counted = total > 0
    ece = (bin_correct.double() - bin_confidence).abs().sum(-1) / total.clamp(min=1)
    brier = brier_sum / total.clamp(min=1)
    confidence = bin_confidence.sum(-1) / total.clamp(min=1)
    nan = torch.tensor(torch.nan, dtype=torch.float64, device=total.device)
    return {"ece": torch.where(counted, ece, nan), "brier": torch.where(counted, brier, nan),
            "mean_confidence": torch.where(counted, confidence, nan)}


class GroupCalibration(Metric):
    """``update(logits, target, groups)``: ``logits`` ``[B, C]`` (softmax is taken here), ``target`` ``[B]`` (rows
    equal to :data:`IGNORE_INDEX` skipped), ``groups`` ``[B]`` ids or ``[B, G]`` membership. ``compute()``:
    ``ece``, ``brier`` (multiclass: mean over examples of ``sum_c (p_c - y_c)^2``), ``mean_confidence`` overall,
    and ``group_ece``, ``group_brier``, ``group_mean_confidence`` ``[G]`` (NaN for absent groups)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, num_groups: int, num_classes: int, n_bins: int = N_BINS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_groups, self.num_classes, self.n_bins = num_groups, num_classes, n_bins
        slots = n_bins + 1  # the last holds confidences of exactly 1 (torchmetrics' bucketize, right=True)
        # row 0: all examples; rows 1..G: each group (overlapping groups count an example in each)
        self.add_state("bin_count", torch.zeros(num_groups + 1, slots, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("bin_correct", torch.zeros(num_groups + 1, slots, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("bin_confidence", torch.zeros(num_groups + 1, slots, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("brier_sum", torch.zeros(num_groups + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor, groups: Tensor) -> None:
        keep = target != IGNORE_INDEX
        probs = torch.softmax(logits[keep].float(), dim=-1)
        target = target[keep].long()
        membership = as_membership(groups[keep], self.num_groups)
        rows = torch.cat([torch.ones_like(membership[:, :1]), membership], dim=1).long()  # [B, G + 1]
        confidence, predicted = probs.max(dim=-1)
        boundaries = torch.linspace(0, 1, self.n_bins + 1, device=probs.device)
        bins = torch.bucketize(confidence, boundaries, right=True) - 1  # [B] in 0..n_bins
        one_hot_bins = torch.nn.functional.one_hot(bins, self.n_bins + 1).long()  # [B, n_bins + 1]
        correct = (predicted == target).long()
        self.bin_count += count_by_rows(rows, one_hot_bins)
        self.bin_correct += count_by_rows(rows, one_hot_bins * correct[:, None])
        self.bin_confidence += rows.T.double() @ (one_hot_bins.double() * confidence.double()[:, None])
        truth = torch.nn.functional.one_hot(target, self.num_classes).float()
        brier = (probs - truth).pow(2).sum(-1).double()
        self.brier_sum += rows.T.double() @ brier

    def compute(self) -> dict[str, Tensor]:
        """Overall and per-group values, and the overall bins (``bin_count``, ``bin_correct``, ``bin_confidence``,
        ``[n_bins + 1]`` sums) for a reliability diagram."""
        values = calibration_from_sums(self.bin_count, self.bin_correct, self.bin_confidence, self.brier_sum)
        return {**{key: value[0] for key, value in values.items()},
                **{f"group_{key}": value[1:] for key, value in values.items()},
                "bin_count": self.bin_count[0], "bin_correct": self.bin_correct[0],
                "bin_confidence": self.bin_confidence[0]}
