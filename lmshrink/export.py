"""Writing a trained network as a plain Hugging Face directory (weights, config, tokenizer)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lmshrink.backbones import load_tokenizer


def refuse_non_empty(directory: str | None, option: str) -> None:
    """Checked when a module is built, long before anything is written: never overwrite a user's directory."""
    if directory and Path(directory).exists() and any(Path(directory).iterdir()):
        raise FileExistsError(f"{option}={directory!r} is not empty; nothing was overwritten")


def save_pretrained(model: nn.Module, tokenizer_source: str, directory: str) -> None:
    """``model.save_pretrained`` plus the tokenizer of ``tokenizer_source``: ``from_pretrained`` loads the result."""
    model.save_pretrained(directory)
    load_tokenizer(tokenizer_source).save_pretrained(directory)
