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
correction over groups, and Tango's paired score interval of the delta; overall, the simultaneous
Clopper-Pearson interval of the worst-group accuracy (:mod:`lmshrink.metrics.beyond_accuracy`; the record's
``interval_methods`` names each). All of it is exact under DDP: counts are summed across ranks before anything is
divided. Taggers report entity F1 with sentence-bootstrap intervals (:mod:`lmshrink.metrics.entity_comparison`).
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lmshrink.datamodules.splits import SplitsDataModule
from lmshrink.errors import OptionError
from lmshrink.metrics.calibration_error import N_BINS
from lmshrink.metrics.comparison import GroupComparison, check_comparison_options
from lmshrink.metrics.entity_comparison import GroupEntityComparison
from lmshrink.metrics.gate_rule import GateFailure, GateThresholds, gate_failures
from lmshrink.metrics.significance import METHODS
from lmshrink.modules.base import LmshrinkModule
from lmshrink.modules.model_cards import measured
from lmshrink.paths import write_new_json

STAGES = ("val", "test")
DEFAULT_RESAMPLES = 1000
"""Resamples of the sentences behind entity F1's intervals and randomization test, unless set."""


def comparison_for(datamodule: SplitsDataModule, reference: str | None, calibration_bins: int = N_BINS, resamples: int | None = None,
                   seed: int | None = None, owner: str = "GroupMetrics"):
    """The per-group comparison of the datamodule's task: entity F1 for token classification (NER), with
    ``resamples`` of the sentences (default 1000, seeded by ``seed``); accuracy and calibration for sequence
    classification, whose intervals are closed-form: resampling options given there are refused by name."""
    if datamodule.task == "token":
        return GroupEntityComparison(datamodule.group_names, datamodule.label_names, reference,
                                     DEFAULT_RESAMPLES if resamples is None else resamples, seed or 0)
    given = [name for name, value in (("bootstrap_resamples", resamples), ("bootstrap_seed", seed))
             if value is not None]
    if given:
        raise OptionError(f"{owner}.{given[0]} resamples sentences for entity F1 (token tagging); accuracy's intervals "
                          f"are closed-form ({METHODS['delta_ci']}, {METHODS['worst_group_acc_ci']}): remove it")
    return GroupComparison(datamodule.group_names, datamodule.num_labels, reference, calibration_bins)


class GroupMetrics(Callback):
    """Per-group accuracy, worst-group accuracy, group gap, macro-F1 and calibration, live at every evaluation
    (exact under DDP), and against the module's reference model flips, divergence and per-group deltas with their
    paired tests and intervals; tables to the terminal, W&B and JSON."""

    def __init__(self, log_per_group: bool = True, write_json: bool = True, bootstrap_resamples: int | None = None,
                 bootstrap_seed: int | None = None, calibration_bins: int = N_BINS,
                 gate: GateThresholds | None = None) -> None:
        """
        Args:
            log_per_group: Log one curve per group and metric (``<stage>/acc/<group>``, ...) at every evaluation.
            write_json: Write the final per-group table to ``group_metrics_<stage>.json`` in the log directory.
            bootstrap_resamples: Token tagging (entity F1) only: resamples of the sentences for the F1 intervals
                and the randomization test (default 1000; 0 turns them off). Accuracy's intervals are closed-form,
                so with sequence classification this option is refused.
            bootstrap_seed: Token tagging only: seed of the resampling (default 0).
            calibration_bins: Equal-width confidence bins of the ECE (15, torchmetrics' default).
            gate: Fail the run (exit 1) at the end of ``test`` when a group's drop to the reference is larger than
                these thresholds and significant (:mod:`lmshrink.metrics.gate_rule`); needs a module with a reference.
        """
        check_comparison_options(bootstrap_resamples, calibration_bins, "--trainer.callbacks")
        self.log_per_group = log_per_group
        self.write_json = write_json
        self.bootstrap_resamples, self.bootstrap_seed = bootstrap_resamples, bootstrap_seed
        self.calibration_bins = calibration_bins
        self.gate = GateThresholds(**gate) if isinstance(gate, dict) else gate
        self.records: dict[str, dict] = {}
        """Per stage: the last record written (rank 0), read by the gate and by tests."""
        self.comparisons: dict[str, GroupComparison] = {}
        self.last_results: dict[str, dict] = {}
        """Per stage: results of the latest evaluation, kept for the end-of-run table (also read by tests)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, SplitsDataModule) or not datamodule.group_names:
            raise RuntimeError("GroupMetrics needs an lmshrink datamodule with groups (GroupedTextDataModule, "
                               "TokenTaggingDataModule)")
        module = pl_module if isinstance(pl_module, LmshrinkModule) else None  # the contract: modules/base.py
        if module is not None and module.is_causal_lm:
            raise ValueError(f"GroupMetrics measures classifiers; {type(pl_module).__name__} trains a causal LM, "
                             f"which reports token-level KD loss and perplexity: remove GroupMetrics from callbacks")
        # Decided from the module at setup, identically on every rank (compute() is a collective).
        self.reference = module.reference_name if module is not None else None
        if self.gate is not None and not self.reference:
            raise ValueError(f"GroupMetrics(gate=...) compares with a reference model, and {type(pl_module).__name__} "
                             f"evaluates none: use lmshrink.modules.Compare (or a distillation / pruning)")
        self.comparisons = {s: comparison_for(datamodule, self.reference, self.calibration_bins,
                                              self.bootstrap_resamples, self.bootstrap_seed) for s in STAGES}

    def _start(self, stage: str, pl_module: LightningModule) -> None:
        self.comparisons[stage] = self.comparisons[stage].to(pl_module.device)
        self.comparisons[stage].reset()

    def _update(self, stage: str, outputs, batch) -> None:
        self.comparisons[stage].observe(outputs, batch)

    def _finish(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        results = self.comparisons[stage].compute()  # sums counts across ranks: every rank gets the global numbers
        self.comparisons[stage].reset()
        if trainer.sanity_checking:
            return
        scalars = self.comparisons[stage].scalars(results, stage, self.log_per_group)
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
        self._report("test", trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report("val", trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # `train.py validate` (e.g. pruning): no fit end follows
            self._report("val", trainer, pl_module)

    def _report(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        if stage in self.last_results:
            self._write_report(stage, trainer, pl_module, log_dir)
        if stage == "test" and self.gate is not None:
            failures = gate_failures(self.records["test"], self.gate) if trainer.is_global_zero else None
            failures = trainer.strategy.broadcast(failures, src=0)
            if failures:
                raise GateFailure("\n".join(failures))

    @rank_zero_only
    def _write_report(self, stage: str, trainer: Trainer, pl_module: LightningModule, log_dir: str | None) -> None:
        comparison = self.comparisons[stage]
        report = comparison.report(self.last_results[stage],
                                   f"Per-group {stage} {comparison.metric} (step {trainer.global_step})")
        rank_zero_info("\n" + report.table)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"{stage}/group_table", columns=report.columns, data=report.data)
        record = {"stage": stage, "global_step": trainer.global_step, **report.record,
                  "eval_set": trainer.datamodule.split_fingerprint(stage), "run_precision": str(trainer.precision)}
        self.records[stage] = record
        source = None
        if self.write_json and log_dir is not None:
            source = write_new_json(log_dir, f"group_metrics_{stage}", record)
        for card in measured(pl_module, stage, source, record):
            rank_zero_info(f"[lmshrink] model card updated: {card}")
