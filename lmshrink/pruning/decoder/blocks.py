"""Calibration activations streamed through a causal LM's decoder blocks, one block at a time.

As in the official Wanda and SparseGPT codes (``prepare_calibration_input`` and the per-layer loop): the inputs
of the first block are caught once (with the keyword arguments the model passes its blocks: attention mask,
positions, rotary embeddings), then each block is run on them to gather its Linears' statistics, pruned, and
run again so the next block sees the *pruned* block's outputs. Memory holds one block's activations
(``samples x length x hidden``) at a time, never the whole model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class _Caught(Exception):
    """Ends the forward pass once the first block's inputs are read."""


@dataclass
class BlockInputs:
    """What a decoder block is called with, per calibration chunk."""

    hidden: list[Tensor]
    kwargs: list[dict]


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    return model.get_decoder().layers


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The block's Linears by name (attention projections, MLP), in module order."""
    return {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}


@torch.no_grad()
def first_block_inputs(model: nn.Module, input_ids: Tensor, batch_size: int) -> BlockInputs:
    """Hidden states and keyword arguments entering block 0, for ``input_ids`` ``[N, L]`` in chunks."""
    return batch_block_inputs(model, [{"input_ids": chunk} for chunk in input_ids.split(batch_size)])


@torch.no_grad()
def batch_block_inputs(model: nn.Module, batches: Sequence[dict[str, Tensor]]) -> BlockInputs:
    """Hidden states and keyword arguments entering block 0, per batch of model inputs (e.g. ``input_ids`` and
    a padding ``attention_mask``)."""
    caught = BlockInputs([], [])

    def catch(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        caught.hidden.append(hidden)
        caught.kwargs.append({key: value for key, value in kwargs.items() if key != "hidden_states"})
        raise _Caught

    handle = decoder_blocks(model)[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**batch, use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
    return caught


@torch.no_grad()
def run_block(block: nn.Module, inputs: BlockInputs) -> list[Tensor]:
    """The block's outputs for every chunk (blocks return a tensor, or a tuple led by it in older transformers)."""
    outputs = []
    for hidden, kwargs in zip(inputs.hidden, inputs.kwargs):
        output = block(hidden, **kwargs)
        outputs.append(output[0] if isinstance(output, tuple) else output)
    return outputs
