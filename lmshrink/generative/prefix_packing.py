"""Token sequences that share prefixes, packed into rows of one batch, each shared prefix read once.

The bias tests score sentence pairs that differ in a word or two (CrowS-Pairs: "Black people are..." / "White
people are..."; StereoSet: one context, its blank filled two ways). Scored one sentence per row, a batch pays for
the tokens both sentences share twice, and for the padding up to its longest sentence. Here the sequences of a
*group* (a pair) go into one row as a prefix tree: a token already in the row under the same predecessor is not
added again, so the pair's common prefix is read once and each sentence continues from its end. Every token
attends to its own ancestors only (the attention mask is the tree's, not a triangle) and sits at its depth in the
tree (its position in its own sentence), so each sentence's logits are those it gets alone, up to floating-point
rounding. Several groups fill a row, so little is padding: on the audit's 400 pairs with SmolLM2's tokenizer,
10,473 tokens read (rows of 128) instead of 17,800.

This needs a model that takes ``position_ids`` and a ready 4-D boolean attention mask (transformers' decoders built
on its attention interface: :func:`packs_prefixes`); for any other, :mod:`lmshrink.generative.likelihood` scores
the sentences one per row, padded, as before.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class PackedRows:
    """A batch of prefix trees: ``input_ids``, ``position_ids`` ``[R, L]`` and a boolean ``attention_mask``
    ``[R, 1, L, L]`` (True: may attend) for the model; ``rows[g]``: the row holding group ``g``, ``paths[g][s]``:
    the positions of the group's sequence ``s`` in it, in order."""

    input_ids: Tensor
    position_ids: Tensor
    attention_mask: Tensor
    rows: list[int]
    paths: list[list[list[int]]]


def pack_sharing_prefixes(groups: list[list[list[int]]], pad_id: int, row_length: int = 128) -> PackedRows:
    """The groups' token sequences as prefix trees in as few rows as fit: each group's tree whole in one row
    (first fit, longest first), rows of ``row_length`` tokens or of the longest tree if longer. A token is added
    to a row unless it already holds the same token after the same predecessor, so sequences share their common
    prefix (across groups too: a prefix's logits are the same whichever sentence it starts) and a repeated
    sequence is free. Rows are padded on the right to the longest; a padding token attends to itself only (no row
    of the mask is empty)."""
    sizes = [len(_Tree(group)) for group in groups]
    capacity = max([row_length, *sizes])
    loads: list[int] = []  # tokens planned per row (sharing across groups can only make a row shorter)
    rows = [0] * len(groups)
    for index in sorted(range(len(groups)), key=lambda index: -sizes[index]):
        row = next((row for row, load in enumerate(loads) if load + sizes[index] <= capacity), len(loads))
        if row == len(loads):
            loads.append(0)
        loads[row] += sizes[index]
        rows[index] = row
    trees = [_Tree([]) for _ in loads]
    paths: list[list[list[int]]] = [[] for _ in groups]
    for index, group in enumerate(groups):  # in the groups' order: positions do not depend on the fitting order
        paths[index] = trees[rows[index]].add(group)
    length = max(len(tree) for tree in trees)
    input_ids = torch.full((len(trees), length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(trees), length), dtype=torch.long)
    mask = np.zeros((len(trees), 1, length, length), dtype=bool)
    mask[:, 0, np.arange(length), np.arange(length)] = True
    for row, tree in enumerate(trees):
        input_ids[row, :len(tree)] = torch.tensor(tree.tokens, dtype=torch.long)
        for position, parent in enumerate(tree.parents):
            if parent >= 0:  # the parent's ancestors and the parent (parents come first), then itself
                mask[row, 0, position, :position] = mask[row, 0, parent, :position]
                position_ids[row, position] = position_ids[row, parent] + 1
    return PackedRows(input_ids, position_ids, torch.from_numpy(mask), rows, paths)


class _Tree:
    """The tokens of one row, each with its parent's position (-1: a root), added sequence by sequence."""

    def __init__(self, group: list[list[int]]) -> None:
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.children: dict[tuple[int, int], int] = {}
        self.add(group)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, group: list[list[int]]) -> list[list[int]]:
        """Add the group's sequences; returns each one's positions."""
        paths = []
        for sequence in group:
            parent, path = -1, []
            for token in sequence:
                position = self.children.get((parent, token))
                if position is None:
                    position = self.children[(parent, token)] = len(self.tokens)
                    self.tokens.append(token)
                    self.parents.append(parent)
                path.append(position)
                parent = position
            paths.append(path)
        return paths


def packs_prefixes(model) -> bool:
    """Whether ``model`` reads packed rows as meant: a transformers model on its attention interface (it passes a
    ready 4-D mask through unchanged) whose forward takes ``position_ids`` (rotary or learned positions read from
    them). Models outside it (e.g. ALiBi built from a 2-D mask) are scored one sentence per row."""
    return bool(getattr(model, "_supports_attention_backend", False)) and \
        "position_ids" in inspect.signature(model.forward).parameters
