"""GroupAgreement against a direct computation per group."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmshrink.metrics.agreement import GroupAgreement
from lmshrink.metrics.groups import IGNORE_INDEX


def test_flips_discordant_counts_and_kl_per_overlapping_group():
    generator = torch.Generator().manual_seed(0)
    logits, reference = torch.randn(120, 3, generator=generator), torch.randn(120, 3, generator=generator)
    target = torch.randint(3, (120,), generator=generator)
    target[::17] = IGNORE_INDEX  # padding rows never count
    membership = torch.rand(120, 2, generator=generator) < 0.5
    metric = GroupAgreement(num_groups=2)
    for rows in torch.arange(120).split(25):
        metric.update(logits[rows], reference[rows], target[rows], membership[rows])
    result = metric.compute()
    counted = target != IGNORE_INDEX
    predicted, reference_predicted = logits.argmax(-1), reference.argmax(-1)
    right, reference_right = predicted == target, reference_predicted == target
    kl = F.kl_div(logits.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    for g, prefix in [(None, ""), (0, "group_"), (1, "group_")]:
        rows = counted if g is None else counted & membership[:, g]
        pick = (lambda value: value) if g is None else (lambda value: value[g])
        assert float(pick(result[f"{prefix}flip_rate"])) == pytest.approx(
            float((predicted != reference_predicted)[rows].float().mean()))
        assert int(pick(result[f"{prefix}model_only_correct"])) == int((right & ~reference_right)[rows].sum())
        assert int(pick(result[f"{prefix}reference_only_correct"])) == int((reference_right & ~right)[rows].sum())
        assert float(pick(result[f"{prefix}kl_to_reference"])) == pytest.approx(float(kl[rows].mean()), rel=1e-5)
