"""``lmshrink fit|validate|test`` (and ``train.py``): a ``LightningCLI`` with lmshrink's run directories.

One run = one directory, ``trainer.default_root_dir`` (e.g. ``runs/teacher_stereoset_minilm``):

- the W&B logger (offline unless the config says otherwise) writes there, and a ModelCheckpoint without
  ``dirpath`` writes to ``<run dir>/checkpoints``. Fixed paths are what make ``--ckpt_path last`` find
  the checkpoint of a killed run (W&B run ids are random, so Lightning's default path would not).
- Outputs of a module (an exported model) default to a folder of the run directory and are checked before the
  run starts; loading a checkpoint for evaluation never re-checks an output of training.
- A fresh ``fit`` refuses a run directory that already holds checkpoints or a config: pass
  ``--ckpt_path last`` to resume, or pick another ``--trainer.default_root_dir``. Nothing is overwritten.
- The resolved config is saved as ``config.yaml``; resumed and evaluation runs save theirs beside it
  under a new name (``config.fit-1.yaml``, ``config.test-1.yaml``, ...).
- The W&B run id is kept in ``<run dir>/wandb_run_id``: a resumed fit continues the same W&B run.
- ``fit`` ends by testing the checkpoint of the trainer's first ModelCheckpoint when it monitors a metric, else
  the final weights (the shipped configs list the unmonitored resume point first: the final weights, which are
  the exported model, so its card carries the test), so the run directory always holds the held-out per-group
  table.
- A run that fails before its first training step removes what it wrote (config, W&B run, step-0
  checkpoints), so the same command can be re-run once the mistake is fixed.
- A user mistake ends with one ``error: ...`` line and exit code 2; a bug with its traceback
  (``LMSHRINK_DEBUG=1`` shows the traceback of user mistakes too).
"""

from __future__ import annotations

import sys
import warnings

from lightning.pytorch import LightningDataModule, LightningModule

from lmshrink.cli.lightning_cli import LmshrinkCLI
from lmshrink.cli.parse_only import concise_parse_error
from lmshrink.cli.run_dirs import NeverOverwriteConfig
from lmshrink.errors import OptionError, debug, message, user_error
from lmshrink.metrics.gate_rule import GateFailure
from lmshrink.quiet import show_progress
from lmshrink.shipped_configs import with_named_configs


def main(args: list[str] | None = None, exit_on_error: bool | None = None) -> LmshrinkCLI:
    """Run the CLI; a user mistake becomes ``error: ...`` on stderr and exit code 2 (see :mod:`lmshrink.errors`).

    ``exit_on_error`` defaults to True on the command line (``args`` None) and False for in-process callers,
    which then get the exception itself."""
    show_progress()
    if exit_on_error is None:
        exit_on_error = args is None
    try:
        args = with_named_configs(sys.argv[1:] if args is None else args)  # `--config teacher/stereoset_minilm`
        # the named configs are resolved into `args`, which Lightning would warn about beside sys.argv
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return LmshrinkCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=NeverOverwriteConfig,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            parser_kwargs={"exit_on_error": False},
            args=args,
        )
    except GateFailure as failure:
        if not exit_on_error:
            raise
        print("gate FAILED:\n  " + str(failure).replace("\n", "\n  "), file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as exc:
        from jsonargparse import ArgumentError

        mistake = OptionError(concise_parse_error(exc)) if isinstance(exc, ArgumentError) else user_error(exc)
        if mistake is None or debug() or not exit_on_error:
            raise
        print(f"error: {message(mistake)}", file=sys.stderr, flush=True)
        if isinstance(exc, ArgumentError):
            print("hint: lmshrink SUBCOMMAND --help lists every option", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
