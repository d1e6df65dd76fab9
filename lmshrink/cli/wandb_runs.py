"""W&B run continuity: a resumed fit logs to the W&B run of its directory, whose id the directory keeps in
``wandb_run_id``; the run starts (with bounded retries) only once every check has passed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.loggers import WandbLogger

from lmshrink.cli.resume import given_ckpt_path
from lmshrink.cli.run_dirs import class_name, configured_loggers
from lmshrink.errors import OutputExistsError

WANDB_ID_FILE = "wandb_run_id"
"""Holds the W&B run id of a run directory, so that ``--ckpt_path last`` continues the same W&B run."""


def continue_wandb_run(config: Namespace, subcommand: str) -> None:
    """Resumed fits log to the W&B run of their directory (same id, ``resume="allow"``), fresh fits get a new id
    written to the directory by :meth:`LmshrinkCLI.before_fit`."""
    if subcommand != "fit":
        return
    root = Path(config.trainer.get("default_root_dir") or os.getcwd())
    for logger in configured_loggers(config.trainer):
        if not class_name(logger).endswith("WandbLogger") or logger.init_args.get("id"):
            continue
        id_file = root / WANDB_ID_FILE
        if given_ckpt_path(config.get("ckpt_path")) is not None and id_file.is_file():
            logger.init_args.id = id_file.read_text().strip()
            logger["dict_kwargs"] = {**(logger.get("dict_kwargs") or {}), "resume": "allow"}
        else:
            from wandb.sdk.lib.runid import generate_id

            logger.init_args.id = generate_id()


def start_wandb_run(logger: WandbLogger, attempts: int = 20, wait_seconds: float = 1.5):
    """The logger's W&B run, started now. A resume right after a kill or Ctrl-C can find the run id still held
    by the W&B service of the process that ended ("run ID ... is in use") for a few seconds: wait and retry
    (bounded) instead of failing the resume."""
    import time

    for _ in range(attempts):
        try:
            return logger.experiment
        except Exception as exc:
            if "is in use" not in str(exc):
                raise
            time.sleep(wait_seconds)
    raise OutputExistsError(
        f"W&B run {logger.version} is still in use by another process after "
        f"{attempts * wait_seconds:.0f} s: is the run you resume still running? Stop it first, or start a new run "
        f"with another --trainer.default_root_dir")


def own_wandb_service() -> None:
    """Start this process's own W&B service instead of joining the one of a parent process (W&B passes it down
    in ``WANDB_SERVICE``): a run killed under a shared service keeps its id "in use" there for as long as the
    parent lives, and the resume of that run would be refused. Called by ``train.py`` at start."""
    os.environ.pop("WANDB_SERVICE", None)


def save_run_id(loggers: list, root: Path) -> None:
    """Write the W&B run id of a fresh fit to its run directory (``logger.version`` is the id given at
    construction, read without starting the run)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.version:
            root.mkdir(parents=True, exist_ok=True)
            (root / WANDB_ID_FILE).write_text(logger.version + "\n")


def forget_run_id(root: Path) -> None:
    """A fresh fit that failed before its first step leaves no run id behind (its W&B run is removed)."""
    (root / WANDB_ID_FILE).unlink(missing_ok=True)


def announce_runs(loggers: list) -> None:
    """Start each W&B run (once every check has passed) and say where it is written and how to watch it live
    (wandb's own lines are silenced)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            _drop_anonymous_none(logger)
            run = start_wandb_run(logger)
            run_dir = Path(run.dir).parent  # created now (removed again if the start fails)
            mode = "offline" if run.offline else "online"
            print(f"[lmshrink] W&B run {run.id} ({mode}): {run_dir}\n"
                  f"[lmshrink] watch it live: wandb leet {run_dir}", flush=True)


def remove_started_runs(loggers: list) -> None:
    """Finish and remove the W&B runs this process started (nothing trained): they would clutter the project and
    block nothing, but a user who fixed a mistake expects one run per run directory."""
    import wandb

    run = wandb.run  # the run this process started, if any (W&B's public handle)
    if run is None or not any(isinstance(logger, WandbLogger) and logger.version == run.id for logger in loggers):
        return
    run_dir = Path(run.dir).parent
    run.finish(exit_code=1)
    shutil.rmtree(run_dir, ignore_errors=True)
    if not any(run_dir.parent.glob("*run-*")):  # only the failed run's debug logs are left
        shutil.rmtree(run_dir.parent, ignore_errors=True)


def _drop_anonymous_none(logger: WandbLogger) -> None:
    """Lightning passes ``anonymous=None`` to ``wandb.init``, which wandb 0.31 answers with a deprecation warning on
    every run. WandbLogger has no public way to leave the key out, so this one private field is touched here, and
    only before the run starts."""
    if logger._experiment is None and logger._wandb_init.get("anonymous", 0) is None:
        del logger._wandb_init["anonymous"]
