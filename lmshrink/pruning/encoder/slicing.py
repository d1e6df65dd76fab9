"""Physical pruning (spec §6): turn head/neuron masks into a smaller model, and save it so that it reloads.

Masks only zero activations; latency drops only when the weights are sliced (spec §5.2). Mask values that
are not 0/1 (Kwon's tuned scales) are folded into the output projection's columns (spec §5.14), so the sliced
model computes exactly what the masked one does, padding included.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import Tensor, nn

from lmshrink.pruning.encoder import sliced_modeling
from lmshrink.pruning.encoder.arch import layout_of, shape_of
from lmshrink.pruning.linear_slicing import slice_linear
from lmshrink.pruning.encoder.sliced_modeling import (
    AUTO_CLASSES,
    FFN_FIELD,
    HEADS_FIELD,
    head_task,
    is_sliced,
    pruned_class,
    replace_with_no_heads,
    shrink_to_config,
)

MODELING_FILE = Path(sliced_modeling.__file__).name


def slice_encoder(model: nn.Module, head_mask: Tensor, neuron_mask: Tensor) -> nn.Module:
    """Slice ``model`` in place to the non-zero entries of ``head_mask`` ``[L, H]`` and ``neuron_mask``
    ``[L, N]`` (values other than 1 are folded into the output projections) and record the widths in its
    config. Returns the model, whose class becomes the matching ``Pruned*`` class so that it saves and reloads."""
    layout, shape = layout_of(model), shape_of(model)
    if is_sliced(model.config):
        raise ValueError("model is already physically pruned; prune the dense model instead")
    heads_kept, ffn_kept = [], []
    for index, layer in enumerate(model.get_submodule(layout.layers)):
        head_scale = head_mask[index].repeat_interleave(shape.head_dim)
        dims = head_scale.nonzero().flatten()
        for name in (layout.query, layout.key, layout.value):
            layer.set_submodule(name, slice_linear(layer.get_submodule(name), rows=dims))
        output = layer.get_submodule(layout.attention_output)
        layer.set_submodule(layout.attention_output, slice_linear(output, columns=dims, column_scale=head_scale))
        if len(dims) == 0:
            replace_with_no_heads(layer, layout)
        neurons = neuron_mask[index].nonzero().flatten()
        layer.set_submodule(layout.ffn_in, slice_linear(layer.get_submodule(layout.ffn_in), rows=neurons))
        layer.set_submodule(layout.ffn_out, slice_linear(layer.get_submodule(layout.ffn_out), columns=neurons,
                                                          column_scale=neuron_mask[index]))
        heads_kept.append(len(dims) // shape.head_dim)
        ffn_kept.append(len(neurons))
    _mark_pruned(model, heads_kept, ffn_kept)
    return model


def _mark_pruned(model: nn.Module, heads: list[int], ffn: list[int]) -> None:
    """Record the widths in the config and make the model an instance of the matching ``Pruned*`` class."""
    setattr(model.config, HEADS_FIELD, list(heads))
    setattr(model.config, FFN_FIELD, list(ffn))
    task = head_task([type(model).__name__])
    cls = pruned_class(model.config.model_type, task)
    model.config.auto_map = {AUTO_CLASSES[task]: f"{MODELING_FILE[:-3]}.{cls.__name__}"}
    model.__class__ = cls  # same attributes and forward; only construction (from a config) differs


def shrink_to_widths(model: nn.Module, heads: list[int], ffn: list[int]) -> nn.Module:
    """Give a dense model the layer widths of a pruned one (weights uninitialised), ready for its state dict;
    how DDP ranks rebuild the model rank 0 pruned."""
    if is_sliced(model.config):
        raise ValueError("model is already physically pruned")
    _mark_pruned(model, heads, ffn)
    shrink_to_config(model)
    return model


def save_sliced(model: nn.Module, directory: str | Path) -> None:
    """``save_pretrained`` plus the modeling file its ``auto_map`` names (the caller adds the tokenizer)."""
    model.save_pretrained(directory)
    shutil.copyfile(sliced_modeling.__file__, Path(directory) / MODELING_FILE)


def load_sliced(directory: str | Path, **kwargs) -> nn.Module:
    """Reload a model saved by :func:`save_sliced` with lmshrink's own classes (no ``trust_remote_code``)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory, local_files_only=True, **kwargs)
    if not is_sliced(config):
        raise ValueError(f"{directory}: config.json has no {HEADS_FIELD}; not a model pruned by lmshrink")
    cls = pruned_class(config.model_type, head_task(config.architectures or []))
    return cls.from_pretrained(directory, config=config, local_files_only=True)
