"""GroupMetrics on its own: a module with fixed predictions, a datamodule with three groups (one absent), one
``validate``; every number against a hand count."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import binomtest
from torchmetrics.classification import MulticlassCalibrationError
from lightning.pytorch import Trainer

from lmshrink.datamodules.splits import SplitsDataModule
from lmshrink.callbacks import GroupMetrics
from lmshrink.metrics.significance import tango_interval, worst_group_interval
from lmshrink.modules.base import LmshrinkModule

LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
GROUPS = torch.tensor([[1, 0, 0]] * 5 + [[0, 1, 0]] * 3, dtype=torch.bool)  # a: rows 0-4, b: rows 5-7, c: none
PREDS = torch.tensor([0, 1, 0, 0, 0, 1, 1, 1])  # a: 3 of 5 right; b: 1 of 3 right
REFERENCE = torch.tensor([0, 1, 1, 0, 1, 1, 0, 0])  # a: 5 of 5; b: 1 of 3
CONFIDENCE = torch.tensor([0.91, 0.83, 0.71, 0.97, 0.62, 0.56, 0.68, 0.88])


def logits_of(preds: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose softmax puts ``confidence`` on ``preds``."""
    probs = torch.stack([1 - confidence, confidence], dim=1)
    probs = torch.where(preds[:, None] == 1, probs, probs.flip(1))
    return probs.log()


LOGITS, REFERENCE_LOGITS = logits_of(PREDS, CONFIDENCE), logits_of(REFERENCE, CONFIDENCE.flip(0))


class FixedPredictions(LmshrinkModule):
    reference_name = "teacher"

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def validation_step(self, batch, batch_idx):
        rows = batch["index"]
        return {"preds": PREDS[rows], "logits": LOGITS[rows], "reference_preds": REFERENCE[rows],
                "reference_logits": REFERENCE_LOGITS[rows]}


class ThreeGroups(SplitsDataModule):
    """The datamodule contract GroupMetrics reads (group names, task, which examples), over fixed rows."""

    num_labels = 2

    def __init__(self) -> None:
        super().__init__()
        self.group_names = ["a", "b", "c"]

    def split_fingerprint(self, split: str) -> str:
        return "fixed-rows"

    def val_dataloader(self):
        rows = [{"labels": LABELS[i], "groups": GROUPS[i], "index": torch.tensor(i)} for i in range(len(LABELS))]
        return torch.utils.data.DataLoader(rows, batch_size=3)  # batches of 3, 3, 2: counts must add up


def test_group_metrics_against_hand_counts(tmp_path):
    callback = GroupMetrics()
    trainer = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[callback], enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu")
    trainer.validate(FixedPredictions(), datamodule=ThreeGroups(), verbose=False)
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    assert logged["val/acc/a"] == pytest.approx(3 / 5) and logged["val/acc/b"] == pytest.approx(1 / 3)
    assert "val/acc/c" not in logged  # absent, never reported as 0
    assert logged["val/worst_group_acc"] == pytest.approx(1 / 3)
    assert logged["val/avg_acc"] == pytest.approx(4 / 8)
    assert logged["val/group_gap"] == pytest.approx(3 / 5 - 1 / 3)
    assert logged["val/teacher_avg_acc"] == pytest.approx(6 / 8)
    assert logged["val/delta/a"] == pytest.approx(3 / 5 - 1) and logged["val/delta/b"] == pytest.approx(0.0)
    # macro-F1 over the two classes, by hand: class 0 tp=2 fp=2 fn=2 -> 0.5; class 1 tp=2 fp=2 fn=2 -> 0.5
    assert logged["val/macro_f1"] == pytest.approx(0.5)
    record = json.loads((tmp_path / "group_metrics_val.json").read_text())
    assert [(g["group"], g["n"], g["accuracy"]) for g in record["groups"]] == [("a", 5, 0.6), ("b", 3, 1 / 3),
                                                                              ("c", 0, None)]
    assert record["delta_to_teacher"] == {"a": pytest.approx(-0.4), "b": pytest.approx(0.0), "c": None}


def test_beyond_accuracy_live_and_in_the_record(tmp_path):
    callback = GroupMetrics()
    trainer = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[callback], enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu")
    trainer.validate(FixedPredictions(), datamodule=ThreeGroups(), verbose=False)
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    ece = lambda logits, rows: float(MulticlassCalibrationError(num_classes=2)(logits[rows].softmax(-1), LABELS[rows]))
    group_a = torch.arange(5)
    assert logged["val/ece"] == pytest.approx(ece(LOGITS, torch.arange(8)), abs=1e-6) == pytest.approx(0.3725)
    assert logged["val/group_ece/a"] == pytest.approx(ece(LOGITS, group_a), abs=1e-6)
    assert logged["val/teacher_ece"] == pytest.approx(ece(REFERENCE_LOGITS, torch.arange(8)), abs=1e-6)
    assert "val/group_ece/c" not in logged and "val/group_flip_rate/c" not in logged
    # flips by hand: rows 2, 4 (group a) and 6, 7 (group b) differ from the teacher
    assert logged["val/flip_rate"] == pytest.approx(4 / 8)
    assert logged["val/group_flip_rate/a"] == pytest.approx(2 / 5) and logged["val/group_flip_rate/b"] == pytest.approx(2 / 3)
    record = json.loads((tmp_path / "group_metrics_val.json").read_text())
    a, b, c = record["groups"]
    # discordant pairs by hand: a: teacher alone right on rows 2, 4; b: student alone on row 7, teacher on row 6
    assert (a["model_only_correct"], a["reference_only_correct"]) == (0, 2)
    assert (b["model_only_correct"], b["reference_only_correct"]) == (1, 1)
    assert a["p_value"] == pytest.approx(binomtest(0, 2).pvalue) == pytest.approx(0.5)
    assert b["p_value"] == pytest.approx(1.0)
    assert a["p_holm"] == pytest.approx(min(1.0, 2 * 0.5)) and "p_holm" not in c  # two groups present
    wilson = binomtest(3, 5).proportion_ci(method="wilson")
    assert (a["ci_low"], a["ci_high"]) == (pytest.approx(wilson.low), pytest.approx(wilson.high))
    assert (a["delta_ci_low"], a["delta_ci_high"]) == tango_interval(0, 2, 5)  # a: 0 model-only, 2 teacher-only
    assert a["delta_ci_low"] <= -0.4 <= a["delta_ci_high"]
    assert record["worst_group_acc_ci"] == list(worst_group_interval([3, 1], [5, 3]))  # c has no example
    assert record["interval_methods"]["worst_group_acc_ci"].startswith("simultaneous Clopper-Pearson")
    assert record["flip_rate"] == pytest.approx(0.5) and record["significant_groups"] == []
    assert record["ece"] == pytest.approx(0.3725, abs=1e-6)


def test_resampling_options_are_refused_for_accuracy(tmp_path):
    """Accuracy's intervals are closed-form: bootstrap_resamples would change nothing, so it is refused by name
    (it still drives entity F1's intervals for taggers)."""
    trainer = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[GroupMetrics(bootstrap_resamples=200)],
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"GroupMetrics.bootstrap_resamples resamples sentences for entity F1"):
        trainer.validate(FixedPredictions(), datamodule=ThreeGroups(), verbose=False)
