"""GroupMetrics on its own: a module with fixed predictions, a datamodule with three groups (one absent), one
``validate``; every number against a hand count."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer

from lmshrink.callbacks import GroupMetrics
from lmshrink.modules.base import LmshrinkModule

LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
GROUPS = torch.tensor([[1, 0, 0]] * 5 + [[0, 1, 0]] * 3, dtype=torch.bool)  # a: rows 0-4, b: rows 5-7, c: none
PREDS = torch.tensor([0, 1, 0, 0, 0, 1, 1, 1])  # a: 3 of 5 right; b: 1 of 3 right
REFERENCE = torch.tensor([0, 1, 1, 0, 1, 1, 0, 0])  # a: 5 of 5; b: 1 of 3


class FixedPredictions(LmshrinkModule):
    reference_name = "teacher"

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def validation_step(self, batch, batch_idx):
        return {"preds": PREDS[batch["index"]], "reference_preds": REFERENCE[batch["index"]]}


class ThreeGroups(LightningDataModule):
    group_names = ["a", "b", "c"]
    num_labels = 2

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
