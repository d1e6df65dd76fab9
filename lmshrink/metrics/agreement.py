"""Model vs its reference, per group, as one torchmetrics ``Metric``: flips, discordant pairs, divergence.

Equal accuracy can hide a changed model ("Accuracy is not all you need", Dutta et al. 2024): a compressed
model may flip many predictions in both directions. Against the reference (distillation teacher, dense model,
float model), on the same examples, per group and overall:

- ``flip_rate``: share of examples whose predicted class differs from the reference's;
- ``model_only_correct`` / ``reference_only_correct``: the two discordant counts of McNemar's test;
- ``kl_to_reference``: mean ``KL(reference || model)`` of the predicted class distributions.

Counts and sums are states reduced with ``sum`` (exact under DDP); the intervals and tests of
:mod:`lmshrink.metrics.significance` need nothing more than these counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from lmshrink.metrics.groups import IGNORE_INDEX, as_membership, count_by_rows


class GroupAgreement(Metric):
    """``update(logits, reference_logits, target, groups)``: logits ``[B, C]`` of the model and of the reference,
    ``target`` ``[B]`` (:data:`IGNORE_INDEX` rows skipped: DDP padding), ``groups`` ``[B]`` ids or ``[B, G]``
    membership. ``compute()``: overall values and ``group_*`` ``[G]`` ones (NaN rates for absent groups)."""

    full_state_update = False

    def __init__(self, num_groups: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_groups = num_groups
        for name in ("total", "flips", "model_only_correct", "reference_only_correct"):
            self.add_state(name, torch.zeros(num_groups + 1, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("kl_sum", torch.zeros(num_groups + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, reference_logits: Tensor, target: Tensor, groups: Tensor) -> None:
        keep = target != IGNORE_INDEX
        log_p = F.log_softmax(logits[keep].float(), dim=-1)
        log_q = F.log_softmax(reference_logits[keep].float(), dim=-1)
        target = target[keep].long()
        membership = as_membership(groups[keep], self.num_groups)
        rows = torch.cat([torch.ones_like(membership[:, :1]), membership], dim=1).long()  # [B, G + 1]
        predicted, reference_predicted = log_p.argmax(-1), log_q.argmax(-1)
        correct, reference_correct = predicted == target, reference_predicted == target
        self.total += rows.sum(0)
        self.flips += count_by_rows(rows, predicted != reference_predicted)
        self.model_only_correct += count_by_rows(rows, correct & ~reference_correct)
        self.reference_only_correct += count_by_rows(rows, reference_correct & ~correct)
        kl = (log_q.exp() * (log_q - log_p)).sum(-1).double()  # KL(reference || model) per example
        self.kl_sum += rows.T.double() @ kl

    def compute(self) -> dict[str, Tensor]:
        total = self.total.double()
        counted = total > 0
        nan = torch.tensor(torch.nan, dtype=torch.float64, device=total.device)
        flip_rate = torch.where(counted, self.flips / total.clamp(min=1), nan)
        kl = torch.where(counted, self.kl_sum / total.clamp(min=1), nan)
        return {
            "flip_rate": flip_rate[0], "group_flip_rate": flip_rate[1:],
            "kl_to_reference": kl[0], "group_kl_to_reference": kl[1:],
            "model_only_correct": self.model_only_correct[0], "group_model_only_correct": self.model_only_correct[1:],
            "reference_only_correct": self.reference_only_correct[0],
            "group_reference_only_correct": self.reference_only_correct[1:],
        }
