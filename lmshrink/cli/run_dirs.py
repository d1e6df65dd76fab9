"""Where a run writes: one run = one directory, ``trainer.default_root_dir``.

Loggers and ModelCheckpoints without a place of their own write there (fixed paths are what make
``--ckpt_path last`` find a killed run's checkpoint), the resolved config is saved under the first free name
(never overwritten), a fresh fit refuses a directory an earlier run used, and console callbacks suit output
redirected to a file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from lmshrink.errors import OutputExistsError
from lmshrink.paths import free_path


class NeverOverwriteConfig(SaveConfigCallback):
    """Saves the resolved config under the first free name instead of failing or overwriting."""

    saved_path: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a collective call (broadcast): every rank must make it
        if trainer.is_global_zero and log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            tag = getattr(stage, "value", stage)  # "fit", not "TrainerFn.FITTING"
            path = free_path(log_dir, "config", ".yaml", tag=tag)
            self.parser.save(self.config, str(path), skip_none=False, multifile=self.multifile)
            self.saved_path = path
        self.already_saved = True


def class_name(entry) -> str:
    if isinstance(entry, Namespace):
        return str(entry.get("class_path", ""))
    return ""


def configured_loggers(trainer_config: Namespace) -> list:
    loggers = trainer_config.get("logger")
    return [logger for logger in (loggers if isinstance(loggers, list) else [loggers]) if class_name(logger)]


def fill_run_dirs(config: Namespace) -> None:
    """Point loggers whose ``save_dir`` is unset or ``.`` and ModelCheckpoints without ``dirpath`` at
    ``trainer.default_root_dir``; a W&B run without a name is named after that directory."""
    trainer = config.trainer
    root = trainer.get("default_root_dir") or os.getcwd()
    if Path(root).exists() and not Path(root).is_dir():
        raise OutputExistsError(f"--trainer.default_root_dir={str(root)!r} is a file, not a directory; name a new "
                                f"run directory (nothing was overwritten)")
    for logger in configured_loggers(trainer):
        if logger.init_args.get("save_dir") in (None, "."):
            logger.init_args.save_dir = str(root)
        if class_name(logger).endswith("WandbLogger") and not logger.init_args.get("name"):
            logger.init_args.name = Path(root).resolve().name  # configs/logger/wandb.yaml names no run
    for callback in trainer.get("callbacks") or []:
        if class_name(callback).endswith("ModelCheckpoint") and callback.init_args.get("dirpath") is None:
            callback.init_args.dirpath = str(Path(root) / "checkpoints")


def drop_logger_callbacks_without_a_logger(config: Namespace) -> None:
    """``--trainer.logger false`` turns logging off; the shipped configs' LearningRateMonitor would then stop the
    run with a traceback (it needs a logger), so it is left out, and said so."""
    trainer = config.trainer
    if trainer.get("logger") is not False and trainer.get("logger") != []:  # None: Lightning's default logger
        return
    callbacks = list(trainer.get("callbacks") or [])
    kept = [callback for callback in callbacks if not class_name(callback).endswith("LearningRateMonitor")]
    if len(kept) < len(callbacks):
        print("[lmshrink] --trainer.logger false: LearningRateMonitor left out (it logs to a logger)", flush=True)
        trainer.callbacks = kept


def checkpoint_dirs(config: Namespace) -> list[Path]:
    return [Path(callback.init_args.dirpath) for callback in config.trainer.get("callbacks") or []
            if class_name(callback).endswith("ModelCheckpoint") and callback.init_args.get("dirpath")]


def add_console_callbacks(config: Namespace) -> None:
    """Plain progress lines instead of a tqdm bar when stdout is a file; a model summary without a 0-FLOPs line."""
    trainer = config.trainer
    callbacks = list(trainer.get("callbacks") or [])
    names = [class_name(callback) for callback in callbacks]
    if (trainer.get("enable_progress_bar") is not False and not sys.stdout.isatty()
            and not any("Progress" in name for name in names)):
        callbacks.append(Namespace(class_path="lmshrink.callbacks.console.LineProgress",
                                   init_args=Namespace(every_n_steps=50, every_seconds=60.0)))
    if trainer.get("enable_model_summary") is not False and not any("ModelSummary" in name for name in names):
        callbacks.append(Namespace(class_path="lmshrink.callbacks.console.ParameterSummary",
                                   init_args=Namespace(max_depth=1)))
    trainer.callbacks = callbacks


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
        raise OutputExistsError(
            f"{where} belongs to an earlier run. Resume it with --ckpt_path last, or start a new run with "
            f"another --trainer.default_root_dir (nothing was overwritten)"
        )


def remove_if_empty(directory: Path) -> None:
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
