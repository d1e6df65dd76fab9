"""The ``train.py`` command line: a ``LightningCLI`` with lmshrink's run-directory conventions.

One run = one directory, ``trainer.default_root_dir`` (e.g. ``runs/teacher_stereoset_minilm``):

- the W&B logger (offline unless the config says otherwise) writes there, and a ModelCheckpoint without
  ``dirpath`` writes to ``<run dir>/checkpoints``. Fixed paths are what make ``--ckpt_path last`` find
  the checkpoint of a killed run (W&B run ids are random, so Lightning's default path would not).
- A fresh ``fit`` refuses a run directory that already holds checkpoints or a config: pass
  ``--ckpt_path last`` to resume, or pick another ``--trainer.default_root_dir``. Nothing is overwritten.
- The resolved config is saved as ``config.yaml``; resumed and evaluation runs save theirs beside it
  under a new name (``config.fit-1.yaml``, ``config.test-1.yaml``, ...).
- ``fit`` ends by testing the best checkpoint (by ``val/worst_group_acc`` in the shipped configs), so
  the run directory always holds the held-out per-group table.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lmshrink.paths import free_path


class NeverOverwriteConfig(SaveConfigCallback):
    """Saves the resolved config under the first free name instead of failing or overwriting."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        if trainer.is_global_zero and log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            path = free_path(log_dir, "config", ".yaml", tag=stage)
            self.parser.save(self.config, str(path), skip_none=False, multifile=self.multifile)
        self.already_saved = True


def _class_name(entry) -> str:
    if isinstance(entry, Namespace):
        return str(entry.get("class_path", ""))
    return ""


def _fill_run_dirs(config: Namespace) -> None:
    """Point loggers whose ``save_dir`` is unset or ``.`` and ModelCheckpoints without ``dirpath`` at
    ``trainer.default_root_dir``."""
    trainer = config.trainer
    root = trainer.get("default_root_dir") or os.getcwd()
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if _class_name(logger) and logger.init_args.get("save_dir") in (None, "."):
            logger.init_args.save_dir = str(root)
    for callback in trainer.get("callbacks") or []:
        if _class_name(callback).endswith("ModelCheckpoint") and callback.init_args.get("dirpath") is None:
            callback.init_args.dirpath = str(Path(root) / "checkpoints")


def refuse_to_overwrite(trainer: Trainer, ckpt_path: str | None) -> None:
    """A fresh fit must not write into the checkpoints or config of an earlier run."""
    if ckpt_path is not None or trainer.fast_dev_run:
        return
    used = [
        Path(callback.dirpath)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath and any(Path(callback.dirpath).glob("*.ckpt"))
    ]
    config = Path(trainer.default_root_dir) / "config.yaml"
    if used or config.exists():
        where = used[0] if used else config
        raise FileExistsError(
            f"{where} belongs to an earlier run. Resume it with --ckpt_path last, or start a new run with "
            f"another --trainer.default_root_dir (nothing was overwritten)"
        )


class LmshrinkCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.init_args.num_labels", "model.init_args.num_labels")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        _fill_run_dirs(config)

    def before_fit(self) -> None:
        refuse_to_overwrite(self.trainer, self.config.fit.get("ckpt_path"))

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def show_progress() -> None:
    """Print lmshrink's progress messages (e.g. one line per pruned sublayer) to stderr, once."""
    logger = logging.getLogger("lmshrink")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[lmshrink] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(args: list[str] | None = None) -> LmshrinkCLI:
    show_progress()
    return LmshrinkCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=NeverOverwriteConfig,
        seed_everything_default=42,
        auto_configure_optimizers=False,
        args=args,
    )
