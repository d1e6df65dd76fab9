"""Writing a trained network as a plain Hugging Face directory (weights, config with class names, tokenizer)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lmshrink.backbones import load_tokenizer


def label_names(datamodule) -> list[str] | None:
    """The task's class names in id order, when the datamodule knows them (``GroupedTextDataModule.label_names``)."""
    names = getattr(datamodule, "label_names", None)
    return list(names) if names else None


def set_class_names(model: nn.Module, class_names: list[str] | None) -> None:
    """The task's class names as the config's ``id2label``/``label2id`` (instead of ``LABEL_0..``), so a saved
    model answers with them."""
    if class_names is not None and len(class_names) == getattr(model.config, "num_labels", None):
        model.config.id2label = dict(enumerate(class_names))
        model.config.label2id = {name: index for index, name in enumerate(class_names)}


def save_pretrained(model: nn.Module, tokenizer_source: str, directory: str | Path,
                    class_names: list[str] | None = None) -> None:
    """``model.save_pretrained`` (with ``class_names``, see :func:`set_class_names`) plus the tokenizer of
    ``tokenizer_source``: ``from_pretrained`` loads the result."""
    set_class_names(model, class_names)
    model.save_pretrained(directory)
    load_tokenizer(tokenizer_source).save_pretrained(directory)
