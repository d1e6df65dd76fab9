"""Wiring between the Lightning runs and :mod:`lmshrink.cards`: what a run knows about how a model was made.

A module that writes a model directory calls :func:`start_model_card`; GroupMetrics and the Quantize callback add
their measurements (:func:`measured`). The run's own facts (the config it saved, the seed, the data) come from the
trainer, so no module repeats them.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lmshrink.cards import add_measurement, has_card_record, parameter_counts, start_card, weights_digest


def run_provenance(trainer: Trainer) -> dict:
    """{run_dir, config, command, seed, dataset} of a CLI run: the config it saved (which reproduces it), its seed
    and the datamodule's dataset; what is not known is left out."""
    facts = {"run_dir": str(trainer.default_root_dir)}
    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            saved = getattr(callback, "saved_path", None)
            if saved is not None:
                subcommand = getattr(trainer.state.fn, "value", trainer.state.fn)  # fit, validate, test
                facts |= {"config": str(saved), "command": f"lmshrink {subcommand} --config {saved}"}
            seed = callback.config.get("seed_everything") if hasattr(callback.config, "get") else None
            if seed is not None:
                facts["seed"] = seed
    dataset = datamodule_option(trainer, "dataset")
    if dataset is not None:
        facts["dataset"] = str(dataset)
    return facts


def datamodule_option(trainer: Trainer, name: str):
    """The datamodule's hyperparameter ``name`` (``dataset``, ``batch_size``), or None without one."""
    return (getattr(getattr(trainer, "datamodule", None), "hparams", None) or {}).get(name)


def plain_settings(values: dict) -> dict:
    """``values`` with what JSON cannot hold written as text (option objects, paths)."""
    return json.loads(json.dumps(values, default=str))


def card_kind(module: LightningModule) -> str:
    if getattr(module, "is_causal_lm", False):
        return "generator"
    return "tagger" if getattr(module, "task", "sequence") == "token" else "classifier"


def start_model_card(trainer: Trainer, module: LightningModule, directory: str | Path, made: dict,
                     model: nn.Module, load: dict | None = None, parent: nn.Module | None = None) -> None:
    """Write the card of a model directory the module just wrote (rank 0): ``made`` = {parent, method, method_tag,
    family, settings} beside the run's facts and the parameter counts of ``model`` and of ``parent`` (the model it
    was made from, when at hand); the weights' digest lets later measurements find it. A card that
    cannot be written is a warning, never a lost model."""
    try:
        if not (load or {}).get("quantized"):  # a quantization run records its own paired size and latency
            made = {"size": parameter_counts(model, parent)} | made
        start_card(directory, card_kind(module), run_provenance(trainer) | made,
                   load or {"trust_remote_code": False, "quantized": None}, weights_digest(model))
    except OSError as exc:  # e.g. a read-only directory: the model is there, its card is not
        rank_zero_warn(f"[lmshrink] no model card written in {directory}: {exc}")


def measured(module: LightningModule, stage: str, source: Path | None, record: dict) -> list[Path]:
    """Put a per-group record on the card of every directory the module names (``card_dirs``) whose weights are the
    ones just measured (same digest); returns the cards written."""
    directories = [directory for directory in getattr(module, "card_dirs", lambda: [])() if has_card_record(directory)]
    if not directories:  # nothing to update: the weights are not hashed
        return []
    digest = weights_digest(module.model)
    if digest is None:  # quantized or otherwise unreadable weights: not provably a directory's, so on no card
        return []
    written = [add_measurement(directory, stage, source, record, digest=digest) for directory in directories]
    return [path for path in written if path is not None]
