"""Start an encoder's forward pass at layer ``l`` from stored hidden states, skipping the layers below.

K-prune decides sublayers bottom-up, and once layer ``l - 1`` is decided (masks and re-fitted weights) nothing
below layer ``l`` changes again: every later pass would recompute the same hidden states entering layer ``l``.
Keeping them (one ``[B, S, d]`` tensor per sample batch, for the student and for the dense teacher) and starting
each pass there gives the same numbers with fewer layers run forward, and, because the skipped layers are no
longer in the autograd graph, fewer run backward.

The stand-ins take the place of the skipped layers in the model's ``ModuleList`` for the duration of a
``with`` block: the first returns the stored hidden states, the others pass them on. Embeddings still run
(a lookup); hooks on the real layers (masks, captures) are untouched and simply not reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lmshrink.pruning.encoder.arch import layout_of
from lmshrink.pruning.capture import StopForward, run_until_stop


class _Stored(nn.Module):
    """Stands in for layer 0: returns the hidden states entering layer ``l``, whatever it is given."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return self.hidden


class _PassOn(nn.Module):
    """Stands in for layers 1 .. l-1: hands the stored hidden states on unchanged."""

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:
        return hidden_states


@contextmanager
def start_at(model: nn.Module, layer: int, hidden: Tensor | None):
    """Within the block, ``model(**batch)`` computes layers ``layer ..`` from ``hidden`` (the input of ``layer``
    for that batch) instead of from the embeddings. ``layer == 0`` or ``hidden is None`` changes nothing."""
    if layer == 0 or hidden is None:
        yield model
        return
    layers = model.get_submodule(layout_of(model).layers)
    originals = [layers[index] for index in range(layer)]
    try:
        layers[0] = _Stored(hidden)
        for index in range(1, layer):
            layers[index] = _PassOn()
        yield model
    finally:
        for index, original in enumerate(originals):
            layers[index] = original


@torch.no_grad()
def next_layer_inputs(model: nn.Module, batches: Sequence[dict[str, Tensor]], layer: int,
                      hidden: Sequence[Tensor] | None) -> list[Tensor]:
    """The hidden states entering layer ``layer + 1`` for every batch, given those entering ``layer``
    (``None`` for layer 0: from the embeddings). Runs layer ``layer`` only, with whatever hooks (masks) are on."""
    layers = model.get_submodule(layout_of(model).layers)
    caught: list[Tensor] = []

    def catch(module: nn.Module, args: tuple) -> None:
        caught.append(args[0])
        raise StopForward

    handle = layers[layer + 1].register_forward_pre_hook(catch)
    try:
        for index, batch in enumerate(batches):
            with start_at(model, layer, None if hidden is None else hidden[index]):
                run_until_stop(model, batch)
    finally:
        handle.remove()
    return caught
