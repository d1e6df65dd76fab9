"""What the command-line entry points print: third-party start-up noise silenced, lmshrink's progress shown.

Every command used to open with torchao's "Failed to load ..._C_mxfp8.so" (CUDA kernels absent on a CPU
build), two torch ``_pytree`` deprecation warnings, W&B's "git root ... does not exist" and transformers'
weight-loading bars and reports. lmshrink reports what matters itself (e.g. a newly initialised classifier
head). Called by ``train.py`` and ``python -m lmshrink.study`` before anything imports those libraries; never
at import time of the package.
"""

from __future__ import annotations

import logging
import os
import warnings


LIGHTNING_NOISE = (
    "GPU available:", "TPU available:", "HPU available:", "\N{ELECTRIC LIGHT BULB} Tip:",
    "Trainer already configured with model summary", "was configured so validation will run",
    "You are using a CUDA device", "to estimate number of stepping batches",
)
"""Start-up lines of Lightning that say nothing about the run on a CPU machine (hardware absent, ads, echoes)."""


class _DropLines(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(prefix in text for prefix in self.prefixes)


def quiet_third_party() -> None:
    """Idempotent: entry points may call it more than once (``python -m lmshrink.study`` before its imports and
    again in :func:`~lmshrink.errors.run_command`)."""
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(existing, _DropLines) for existing in lightning.filters):  # one filter, not one per call
        lightning.addFilter(_DropLines(LIGHTNING_NOISE))
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # lightning vs torch 2.13
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # every resume
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # per-batch "inputs will be cast to float16" lines
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    os.environ.setdefault("WANDB_SILENT", "true")  # the CLI prints the run's directory and how to watch it
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def show_progress() -> None:
    """Print lmshrink's progress messages (e.g. one line per pruned sublayer) to stderr, once."""
    logger = logging.getLogger("lmshrink")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[lmshrink] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
