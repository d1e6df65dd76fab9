"""The Lightning command line (``lmshrink fit|validate|test``, ``train.py``), in rooms by job:

- :mod:`main`: the entry point, its exit codes and one-line errors;
- :mod:`lightning_cli`: ``LmshrinkCLI``, every check before the first batch, clean-up of a failed start;
- :mod:`run_dirs`: one run = one directory (loggers, checkpoints, saved configs, console callbacks);
- :mod:`resume`: the checkpoint ``--ckpt_path`` names and what a resume may change;
- :mod:`wandb_runs`: a resumed fit continues its W&B run;
- :mod:`parse_only`: a command's options checked without running it (the study's checks).
"""

from lmshrink.cli.lightning_cli import LmshrinkCLI
from lmshrink.cli.main import main
from lmshrink.cli.parse_only import check_args, instantiate_datamodule
from lmshrink.cli.wandb_runs import own_wandb_service

__all__ = ["LmshrinkCLI", "check_args", "instantiate_datamodule", "main", "own_wandb_service"]
