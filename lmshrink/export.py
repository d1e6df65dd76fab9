"""Writing a trained network as a plain Hugging Face directory (weights, config, tokenizer)."""

from __future__ import annotations

from torch import nn

from lmshrink.backbones import load_tokenizer


def save_pretrained(model: nn.Module, tokenizer_source: str, directory: str) -> None:
    """``model.save_pretrained`` plus the tokenizer of ``tokenizer_source``: ``from_pretrained`` loads the result."""
    model.save_pretrained(directory)
    load_tokenizer(tokenizer_source).save_pretrained(directory)
