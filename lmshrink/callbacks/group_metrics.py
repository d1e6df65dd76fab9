"""``GroupMetrics``: live per-subgroup accuracy, worst-group accuracy, group gap and macro-F1.

Every validation it logs ``val/worst_group_acc``, ``val/avg_acc``, ``val/group_gap``, ``val/macro_f1``
and ``val/group_acc/<group>`` (absent groups are skipped, not logged as 0). At the end of ``fit`` (last
validation) and of ``test`` it prints the per-group table, logs it as a ``wandb.Table`` when a W&B logger
is attached, and writes it to ``<log dir>/group_metrics_<stage>.json`` (``group_metrics_<stage>-N.json`` when a
earlier run of the same directory left one: nothing is overwritten).

Contract with the LightningModule: ``validation_step``/``test_step`` return a dict with ``preds``; the
batch carries ``labels`` and ``groups``; ``trainer.datamodule`` has ``group_names`` and ``num_labels``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lmshrink.metrics.groups import GroupAccuracy
from lmshrink.metrics.report import TABLE_COLUMNS, format_group_table, group_rows, rows_as_dicts, summary
from lmshrink.paths import free_path

STAGES = ("val", "test")


class GroupMetrics(Callback):
    def __init__(self, log_per_group: bool = True, write_json: bool = True) -> None:
        """
        Args:
            log_per_group: Log one accuracy curve per group (``<stage>/group_acc/<group>``) at every evaluation.
            write_json: Write the final per-group table to ``group_metrics_<stage>.json`` in the log directory.
        """
        self.log_per_group = log_per_group
        self.write_json = write_json
        self.group_names: list[str] = []
        self.metrics: dict[str, GroupAccuracy] = {}
        self.last_results: dict[str, dict] = {}
        """Per stage: results of the latest evaluation, kept for the end-of-run table (also read by tests)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not getattr(datamodule, "group_names", None):
            raise RuntimeError("GroupMetrics needs a datamodule with group_names (e.g. GroupedTextDataModule)")
        self.group_names = list(datamodule.group_names)
        self.metrics = {s: GroupAccuracy(len(self.group_names), datamodule.num_labels) for s in STAGES}

    def _start(self, stage: str, pl_module: LightningModule) -> None:
        self.metrics[stage] = self.metrics[stage].to(pl_module.device)
        self.metrics[stage].reset()

    def _update(self, stage: str, outputs, batch) -> None:
        self.metrics[stage].update(outputs["preds"], batch["labels"], batch["groups"])

    def _finish(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        metric = self.metrics[stage]
        results = metric.compute()  # sums counts across ranks: every rank gets the global numbers
        metric.reset()
        if trainer.sanity_checking:
            return
        scalars = {f"{stage}/{key}": value for key, value in summary(results).items()}
        if self.log_per_group:
            for name, acc, present in zip(self.group_names, results["group_acc"], results["group_present"]):
                if present:
                    scalars[f"{stage}/group_acc/{name}"] = float(acc)
        pl_module.log_dict({key: torch.tensor(value) for key, value in scalars.items()}, sync_dist=False)
        self.last_results[stage] = results

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("val", pl_module)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test", pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("val", outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", outputs, batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish("test", trainer, pl_module)
        self._report("test", trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report("val", trainer)

    def _report(self, stage: str, trainer: Trainer) -> None:
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        if stage in self.last_results:
            self._write_report(stage, trainer, log_dir)

    @rank_zero_only
    def _write_report(self, stage: str, trainer: Trainer, log_dir: str | None) -> None:
        results = self.last_results[stage]
        rows = group_rows(self.group_names, results)
        scalars = summary(results)
        rank_zero_info("\n" + format_group_table(rows, f"Per-group {stage} accuracy (step {trainer.global_step})", scalars))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                data = [[row.group, row.n, row.accuracy, row.delta_to_avg] for row in rows]
                logger.log_table(key=f"{stage}/group_table", columns=TABLE_COLUMNS, data=data)
        if self.write_json and log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            path = free_path(log_dir, f"group_metrics_{stage}", ".json")
            record = {"stage": stage, "global_step": trainer.global_step, **scalars, "groups": rows_as_dicts(rows)}
            path.write_text(json.dumps(record, indent=2))
