"""``LmshrinkModule``: what every lmshrink LightningModule tells the command line and the callbacks.

The CLI and the callbacks read these attributes instead of guessing with ``getattr(..., default)``, so a new
module knows what to provide: override what differs from the defaults here.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningModule
from torch import nn

from lmshrink.optim import OptimizerFactory, SchedulerFactory, configure_optimization
from lmshrink.seeding import seed_training_batch


class LmshrinkModule(LightningModule):
    """Base of lmshrink's modules: the contract with ``train.py`` and the callbacks (defaults)."""

    reference_name: str | None = None
    """Name of the model this one is compared with per group (``teacher``, ``dense``); None: no reference."""

    is_causal_lm: bool = False
    """True when the module trains or evaluates a generator (no class predictions for GroupMetrics)."""

    task: str = "sequence"
    """``sequence`` or ``token`` classification: must equal the datamodule's ``task`` (the CLI checks it first)."""

    untrained_head: bool = False
    """True when the classifier head is newly initialised: evaluating it without a checkpoint is refused."""

    model_inputs: list[str] = ["input_ids", "attention_mask"]
    """Batch fields the network's ``forward`` takes (see ``backbones.accepted_inputs``)."""

    @classmethod
    def check_options(cls, **options) -> None:
        """Refuse a bad option value in one line without loading anything: the CLI calls it with the parsed
        ``--model.*`` values before it builds the module, and a study before its first stage runs, so a mistake in
        the last stage's options does not wait for the stages before it. Checks nothing by default."""

    def given_models(self) -> dict[str, tuple[str, nn.Module]]:
        """{option: (value, network)} of the trained classifiers this module uses as they were given (a reference,
        a teacher, a model to prune or evaluate; not one whose head it trains): the CLI checks their class names
        and context against the data before any work (:func:`lmshrink.model_fit.check_against_data`)."""
        return {}

    @property
    def source_model(self) -> str:
        """Where the evaluated network comes from (a path, hub id or checkpoint), recorded with its measurements
        (e.g. by the Quantize callback)."""
        return ""

    def output_dirs(self, run_dir: str | Path, subcommand: str) -> dict[str, Path]:
        """{option name: directory} this module writes during ``subcommand``; the CLI refuses non-empty ones
        before the run starts (and never when a checkpoint is only loaded for evaluation)."""
        return {}

    def card_dirs(self) -> list[str | Path]:
        """Model directories whose card (:mod:`lmshrink.cards`) may take this run's measurements: the one it wrote,
        the one it loaded. GroupMetrics puts a record on a card only when ``self.model``'s weights are that
        directory's (same digest), so listing a directory is safe even when another model is measured."""
        return []


class TrainingModule(LmshrinkModule):
    """Base of the modules that train (teacher fine-tuning, distillation): one optimizer and schedule set-up
    (:mod:`lmshrink.optim`: AdamW + linear warmup unless ``optimizer`` / ``lr_scheduler`` are injected) and the
    per-batch seeding that makes a resumed run equal an uninterrupted one. Subclasses set ``self.optimizer`` and
    ``self.lr_scheduler`` (None: the default) and keep ``learning_rate``, ``weight_decay``, ``warmup_ratio`` in
    their hyperparameters."""

    optimizer: OptimizerFactory | None = None
    lr_scheduler: SchedulerFactory | None = None

    def trainable(self) -> nn.Module:
        """What the optimizer updates; default ``self.model``."""
        return self.model

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        seed_training_batch(self.current_epoch, batch_idx, self.global_rank)

    def configure_optimizers(self):
        hp = self.hparams
        return configure_optimization(self.trainable(), int(self.trainer.estimated_stepping_batches),
                                      hp.learning_rate, hp.weight_decay, hp.warmup_ratio, self.optimizer,
                                      self.lr_scheduler)
