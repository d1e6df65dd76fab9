"""``GroupMetrics``: live per-subgroup accuracy, worst-group accuracy, group gap, macro-F1, calibration and, against
a reference model, prediction flips and divergence; the final table with intervals and paired tests.

Every validation it logs ``val/worst_group_acc``, ``val/avg_acc``, ``val/group_gap``, ``val/macro_f1``,
``val/ece``, ``val/brier``, ``val/mean_confidence``, ``val/acc/<group>`` and ``val/group_ece/<group>`` (absent
groups are skipped, not logged as 0; keys are short so that a live view such as ``wandb leet``, whose panel
titles show about 30 characters, tells the groups apart). At the end of ``fit`` (last
validation) and of ``test`` it prints the per-group table, logs it as a ``wandb.Table`` when a W&B logger
is attached, and writes it to ``<log dir>/group_metrics_<stage>.json`` (``group_metrics_<stage>-N.json`` when a
earlier run of the same directory left one: nothing is overwritten).

Contract with the LightningModule: ``validation_step``/``test_step`` return a dict with ``preds`` and ``logits``
(``[B, C]``; without them no calibration is reported); the batch carries ``labels``, ``groups`` and ``index`` (the
examples' positions in the split); ``trainer.datamodule`` has ``group_names`` and ``num_labels``.
A module that also evaluates a reference model (a distillation teacher, the dense model of a pruning) sets
``reference_name`` (e.g. ``"teacher"``) and returns ``reference_preds`` and ``reference_logits``: the reference's
metrics are logged as ``<stage>/teacher_<metric>``, every group's accuracy difference to it as
``<stage>/delta/<group>`` ("who pays" for the compression), the share of flipped predictions as
``<stage>/flip_rate`` and ``<stage>/group_flip_rate/<group>``, and ``KL(reference || model)`` as
``<stage>/kl_to_teacher``, live.

The final table (terminal, W&B, JSON) adds per group the Wilson 95 % interval of the accuracy, ECE, Brier score,
and against the reference the flip rate, the discordant counts, the exact McNemar p-value and its Holm
correction over groups, and the paired bootstrap interval of the delta; overall, the bootstrap interval of the
worst-group accuracy (:mod:`lmshrink.metrics.beyond_accuracy`). All of it is exact under DDP: counts are summed
and per-example outcomes gathered and ordered by example before anything is divided or resampled.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lmshrink.metrics.agreement import ExampleOutcomes, GroupAgreement
from lmshrink.metrics.beyond_accuracy import beyond_accuracy
from lmshrink.metrics.calibration import N_BINS, GroupCalibration
from lmshrink.metrics.groups import GroupAccuracy
from lmshrink.modules.base import LmshrinkModule
from lmshrink.metrics.report import (
    TABLE_COLUMNS,
    format_group_table,
    group_deltas,
    group_rows,
    rows_as_dicts,
    summary,
)
from lmshrink.paths import write_new_json

STAGES = ("val", "test")
DETAIL_COLUMNS = ("ci_low", "ci_high", "ece", "brier", "flip_rate", "model_only_correct", "reference_only_correct",
                  "p_value", "p_holm", "delta_ci_low", "delta_ci_high", "kl_to_reference")
"""Per-group columns beyond accuracy in the W&B table and JSON (those measured in the run)."""


def _fingerprint(datamodule, stage: str) -> str | None:
    """Which examples were evaluated (see ``GroupedTextDataModule.split_fingerprint``), when the datamodule says."""
    fingerprint = getattr(datamodule, "split_fingerprint", None)
    return fingerprint(stage) if fingerprint is not None else None


class GroupMetrics(Callback):
    """Per-group accuracy, worst-group accuracy, group gap and macro-F1, live at every evaluation (exact under
    DDP), and the per-group delta to the module's reference model; tables to the terminal, W&B and JSON."""

    def __init__(self, log_per_group: bool = True, write_json: bool = True, bootstrap_resamples: int = 1000,
                 bootstrap_seed: int = 0, calibration_bins: int = N_BINS) -> None:
        """
        Args:
            log_per_group: Log one curve per group and metric (``<stage>/acc/<group>``, ...) at every evaluation.
            write_json: Write the final per-group table to ``group_metrics_<stage>.json`` in the log directory.
            bootstrap_resamples: Resamples of the examples for the intervals of the worst-group accuracy and of
                each group's delta to the reference (final table only); 0 turns the bootstrap off.
            bootstrap_seed: Seed of the resampling (the intervals are reproducible).
            calibration_bins: Equal-width confidence bins of the ECE (15, torchmetrics' default).
        """
        if bootstrap_resamples < 0:
            raise ValueError(f"--trainer.callbacks.bootstrap_resamples={bootstrap_resamples} must be >= 0")
        if calibration_bins < 1:
            raise ValueError(f"--trainer.callbacks.calibration_bins={calibration_bins} must be >= 1")
        self.log_per_group = log_per_group
        self.write_json = write_json
        self.bootstrap_resamples, self.bootstrap_seed = bootstrap_resamples, bootstrap_seed
        self.calibration_bins = calibration_bins
        self.group_names: list[str] = []
        self.metrics: dict[str, GroupAccuracy] = {}
        self.last_results: dict[str, dict] = {}
        """Per stage: results of the latest evaluation, kept for the end-of-run table (also read by tests)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not getattr(datamodule, "group_names", None):
            raise RuntimeError("GroupMetrics needs a datamodule with group_names (e.g. GroupedTextDataModule)")
        module = pl_module if isinstance(pl_module, LmshrinkModule) else None  # the contract: modules/base.py
        if module is not None and module.is_causal_lm:
            raise ValueError(f"GroupMetrics measures classifiers; {type(pl_module).__name__} trains a causal LM, "
                             f"which reports token-level KD loss and perplexity: remove GroupMetrics from callbacks")
        self.group_names = list(datamodule.group_names)
        # Decided from the module at setup, identically on every rank (compute() is a collective).
        self.reference = module.reference_name if module is not None else None
        num_groups, num_classes = len(self.group_names), datamodule.num_labels
        factories = {"model": lambda: GroupAccuracy(num_groups, num_classes),
                     "calibration": lambda: GroupCalibration(num_groups, num_classes, self.calibration_bins),
                     "outcomes": lambda: ExampleOutcomes(num_groups)}
        if self.reference:
            factories |= {"reference": lambda: GroupAccuracy(num_groups, num_classes),
                          "reference_calibration": lambda: GroupCalibration(num_groups, num_classes,
                                                                            self.calibration_bins),
                          "agreement": lambda: GroupAgreement(num_groups)}
        self.metrics = {(s, kind): make() for s in STAGES for kind, make in factories.items()}

    def _start(self, stage: str, pl_module: LightningModule) -> None:
        for key in self.metrics:
            if key[0] == stage:
                self.metrics[key] = self.metrics[key].to(pl_module.device)
                self.metrics[key].reset()

    def _update(self, stage: str, outputs, batch) -> None:
        labels, groups = batch["labels"], batch["groups"]
        logits, reference_logits = outputs.get("logits"), outputs.get("reference_logits")
        self.metrics[stage, "model"].update(outputs["preds"], labels, groups)
        if logits is not None:
            self.metrics[stage, "calibration"].update(logits, labels, groups)
        if "index" in batch:
            self.metrics[stage, "outcomes"].update(outputs["preds"], labels, groups, batch["index"],
                                                   outputs.get("reference_preds"))
        if self.reference:
            self.metrics[stage, "reference"].update(outputs["reference_preds"], labels, groups)
            if logits is not None and reference_logits is not None:
                self.metrics[stage, "reference_calibration"].update(reference_logits, labels, groups)
                self.metrics[stage, "agreement"].update(logits, reference_logits, labels, groups)

    def _finish(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        # compute() sums counts across ranks: every rank gets the global numbers
        results = {kind: metric.compute() for (s, kind), metric in self.metrics.items() if s == stage}
        for (s, _), metric in self.metrics.items():
            if s == stage:
                metric.reset()
        if trainer.sanity_checking:
            return
        model = results["model"]
        scalars = {f"{stage}/{key}": value for key, value in summary(model).items()}
        scalars |= self._beyond_accuracy_scalars(stage, results)
        if self.reference:
            reference = results["reference"]
            scalars |= {f"{stage}/{self.reference}_{key}": value for key, value in summary(reference).items()}
        if self.log_per_group:
            for index, (name, present) in enumerate(zip(self.group_names, model["group_present"])):
                if present:
                    scalars[f"{stage}/acc/{name}"] = float(model["group_acc"][index])
                    scalars |= self._group_scalars(stage, results, index, name)
        scalars = {key: value for key, value in scalars.items() if not math.isnan(value)}  # nothing measured: no curve
        pl_module.log_dict({key: torch.tensor(value) for key, value in scalars.items()}, sync_dist=False)
        self.last_results[stage] = results

    def _beyond_accuracy_scalars(self, stage: str, results: dict) -> dict[str, float]:
        calibration = results["calibration"]
        scalars = {f"{stage}/{key}": float(calibration[key]) for key in ("ece", "brier", "mean_confidence")}
        if self.reference:
            scalars[f"{stage}/{self.reference}_ece"] = float(results["reference_calibration"]["ece"])
            scalars[f"{stage}/flip_rate"] = float(results["agreement"]["flip_rate"])
            scalars[f"{stage}/kl_to_{self.reference}"] = float(results["agreement"]["kl_to_reference"])
        return scalars

    def _group_scalars(self, stage: str, results: dict, index: int, name: str) -> dict[str, float]:
        scalars = {f"{stage}/group_ece/{name}": float(results["calibration"]["group_ece"][index])}
        if self.reference:
            delta = results["model"]["group_acc"][index] - results["reference"]["group_acc"][index]
            scalars[f"{stage}/delta/{name}"] = float(delta)
            scalars[f"{stage}/group_flip_rate/{name}"] = float(results["agreement"]["group_flip_rate"][index])
        return scalars

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

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # `train.py validate` (e.g. pruning): no fit end follows
            self._report("val", trainer)

    def _report(self, stage: str, trainer: Trainer) -> None:
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        if stage in self.last_results:
            self._write_report(stage, trainer, log_dir)

    @rank_zero_only
    def _write_report(self, stage: str, trainer: Trainer, log_dir: str | None) -> None:
        results = self.last_results[stage]
        rows = group_rows(self.group_names, results["model"])
        scalars = summary(results["model"])
        overall, details = beyond_accuracy(self.group_names, results["model"], results["calibration"],
                                           results["outcomes"], results.get("agreement"), self.bootstrap_resamples,
                                           self.bootstrap_seed)
        title = f"Per-group {stage} accuracy (step {trainer.global_step})"
        columns, data = list(TABLE_COLUMNS), [[row.group, row.n, row.accuracy, row.delta_to_avg] for row in rows]
        reference_record, reference_rows, reference_scalars = {}, None, None
        if self.reference:
            reference_rows = group_rows(self.group_names, results["reference"])
            reference_scalars = summary(results["reference"])
            deltas = group_deltas(rows, reference_rows)
            columns += [f"{self.reference}_accuracy", f"delta_to_{self.reference}"]
            data = [line + [ref.accuracy, delta] for line, ref, delta in zip(data, reference_rows, deltas)]
            reference_record = {self.reference: reference_scalars,
                                f"delta_to_{self.reference}": dict(zip(self.group_names, deltas))}
        extra = [key for key in DETAIL_COLUMNS if any(key in row for row in details)]
        columns += extra
        data = [line + [row.get(key) for key in extra] for line, row in zip(data, details)]
        rank_zero_info("\n" + format_group_table(rows, title, scalars, self.reference, reference_rows,
                                                 reference_scalars, details, overall))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"{stage}/group_table", columns=columns, data=data)
        if self.write_json and log_dir is not None:
            groups = [row | {key: value for key, value in detail.items() if key != "group"}
                      for row, detail in zip(rows_as_dicts(rows), details)]
            record = {"stage": stage, "global_step": trainer.global_step, **scalars, **overall, "groups": groups,
                      **reference_record, "eval_set": _fingerprint(trainer.datamodule, stage)}
            write_new_json(log_dir, f"group_metrics_{stage}", record)
