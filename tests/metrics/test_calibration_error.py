"""GroupCalibration against torchmetrics' MulticlassCalibrationError (the definition the issue names), overall
and per group, and the Brier score against its formula; states add up across shards as DDP sums them."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from lmshrink.metrics.calibration_error import GroupCalibration
from lmshrink.metrics.groups import IGNORE_INDEX


def reference_ece(logits, target, n_bins=15) -> float:
    metric = MulticlassCalibrationError(num_classes=logits.shape[1], n_bins=n_bins, norm="l1")
    return float(metric(logits.softmax(-1), target))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_and_brier_overall_and_per_overlapping_group(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(200, 4, generator=generator) * 3
    target = torch.randint(4, (200,), generator=generator)
    membership = torch.rand(200, 3, generator=generator) < 0.4  # overlapping groups
    metric = GroupCalibration(num_groups=3, num_classes=4)
    for rows in torch.arange(200).split(37):  # uneven batches
        metric.update(logits[rows], target[rows], membership[rows])
    result = metric.compute()
    assert float(result["ece"]) == pytest.approx(reference_ece(logits, target), abs=1e-6)
    probs = logits.softmax(-1)
    brier = (probs - torch.nn.functional.one_hot(target, 4)).pow(2).sum(-1)
    assert float(result["brier"]) == pytest.approx(float(brier.mean()), rel=1e-6)
    assert float(result["mean_confidence"]) == pytest.approx(float(probs.max(-1).values.mean()), rel=1e-6)
    for g in range(3):
        rows = membership[:, g]
        assert float(result["group_ece"][g]) == pytest.approx(reference_ece(logits[rows], target[rows]), abs=1e-6)
        assert float(result["group_brier"][g]) == pytest.approx(float(brier[rows].mean()), rel=1e-6)


def test_hand_computed_ece_ignored_rows_and_absent_groups():
    # top-label confidences and correctness; 15 bins of width 1/15
    confidence = torch.tensor([0.91, 0.83, 0.71, 0.97, 0.62, 0.56, 0.68, 0.88])
    correct = torch.tensor([1, 1, 0, 1, 0, 0, 0, 1]).bool()
    target = torch.ones(8, dtype=torch.long)
    predicted = torch.where(correct, 1, 0)
    probs = torch.zeros(8, 2)
    probs[torch.arange(8), predicted] = confidence
    probs[torch.arange(8), 1 - predicted] = 1 - confidence
    logits = probs.log()
    metric = GroupCalibration(num_groups=2, num_classes=2)
    padded_target = torch.cat([target, torch.tensor([IGNORE_INDEX])])  # a DDP padding row never counts
    metric.update(torch.cat([logits, torch.zeros(1, 2)]), padded_target, torch.zeros(9, dtype=torch.long))
    result = metric.compute()
    # bins: 13 {0.91, 0.88 right}, 12 {0.83 right}, 10 {0.71, 0.68 wrong}, 14 {0.97 right}, 9 {0.62}, 8 {0.56}
    expected = (abs(2 - 1.79) + abs(1 - 0.83) + abs(0 - 1.39) + abs(1 - 0.97) + 0.62 + 0.56) / 8
    assert float(result["ece"]) == pytest.approx(expected, abs=1e-6) == pytest.approx(0.3725)
    assert torch.isnan(result["group_ece"][1])  # group 1 absent: NaN, not 0


def test_states_of_two_shards_add_up_to_one_process():
    generator = torch.Generator().manual_seed(3)
    logits, target = torch.randn(60, 3, generator=generator), torch.randint(3, (60,), generator=generator)
    groups = torch.randint(2, (60,), generator=generator)
    whole, first, second = (GroupCalibration(2, 3) for _ in range(3))
    whole.update(logits, target, groups)
    first.update(logits[::2], target[::2], groups[::2])
    second.update(logits[1::2], target[1::2], groups[1::2])
    for name in ("bin_count", "bin_correct", "bin_confidence", "brier_sum"):  # what DDP's sum reduction does
        setattr(first, name, getattr(first, name) + getattr(second, name))
    merged, expected = first.compute(), whole.compute()
    for key in expected:
        torch.testing.assert_close(merged[key], expected[key], rtol=1e-12, atol=1e-12, equal_nan=True)
