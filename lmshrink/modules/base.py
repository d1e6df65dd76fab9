"""``LmshrinkModule``: what every lmshrink LightningModule tells the command line and the callbacks.

The CLI and the callbacks read these attributes instead of guessing with ``getattr(..., default)``, so a new
module knows what to provide: override what differs from the defaults here.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningModule


class LmshrinkModule(LightningModule):
    """Base of lmshrink's modules: the contract with ``train.py`` and the callbacks (defaults)."""

    reference_name: str | None = None
    """Name of the model this one is compared with per group (``teacher``, ``dense``); None: no reference."""

    is_causal_lm: bool = False
    """True when the module trains or evaluates a generator (no class predictions for GroupMetrics)."""

    untrained_head: bool = False
    """True when the classifier head is newly initialised: evaluating it without a checkpoint is refused."""

    model_inputs: list[str] = ["input_ids", "attention_mask"]
    """Batch fields the network's ``forward`` takes (see ``backbones.accepted_inputs``)."""

    @property
    def source_model(self) -> str:
        """Where the evaluated network comes from (a path, hub id or checkpoint), recorded with its measurements
        (e.g. by the Quantize callback)."""
        return ""

    def output_dirs(self, run_dir: str | Path, subcommand: str) -> dict[str, Path]:
        """{option name: directory} this module writes during ``subcommand``; the CLI refuses non-empty ones
        before the run starts (and never when a checkpoint is only loaded for evaluation)."""
        return {}
