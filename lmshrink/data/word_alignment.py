"""Words to sub-tokens and back, for token classification that is measured over words and spans.

Each word's tag goes on its first sub-token; its other sub-tokens and the special tokens get
:data:`~lmshrink.metrics.groups.IGNORE_INDEX` (the loss skips them). Predictions are read back at each word's first
sub-token (``word_starts``); a word without one (cut off by ``max_length``, or a character sequence the tokenizer
drops) is predicted ``O``, so it counts as missed instead of disappearing from the evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lmshrink.metrics.groups import IGNORE_INDEX


def align_words(word_ids: list[int | None], word_tags: list[int]) -> tuple[list[int], list[int]]:
    """``(token_labels, word_starts)`` of one encoded sentence: ``word_ids`` from a fast tokenizer's encoding
    (None for special tokens), ``word_tags`` the tag id of every word."""
    token_labels = [IGNORE_INDEX] * len(word_ids)
    word_starts = [-1] * len(word_tags)
    for position, word in enumerate(word_ids):
        if word is not None and word_starts[word] == -1:
            word_starts[word] = position
            token_labels[position] = word_tags[word]
    return token_labels, word_starts


class TaggedSentenceDataset(Dataset):
    """Tokenized sentences with their sub-token labels, every word's gold tag and first-sub-token position, and a
    group-membership row each. Indices ``>= len(self)`` return a padding copy of a row with every label ignored
    (the evaluation shards of DDP; the metrics skip it)."""

    def __init__(self, encodings: dict[str, list[list[int]]], token_labels: list[list[int]],
                 word_tags: list[list[int]], word_starts: list[list[int]], groups: np.ndarray) -> None:
        self.encodings, self.token_labels = encodings, token_labels
        self.word_tags, self.word_starts = word_tags, word_starts
        self.groups = torch.as_tensor(groups, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.token_labels)

    def label_bytes(self) -> bytes:
        """Every word's tag as bytes, for the split's fingerprint."""
        return np.concatenate([np.asarray(tags + [-1], dtype=np.int64) for tags in self.word_tags]).tobytes()

    def __getitem__(self, index: int) -> dict[str, Any]:
        padding = index >= len(self)
        row = index - len(self) if padding else index
        item = {key: values[row] for key, values in self.encodings.items()}
        item["labels"] = [IGNORE_INDEX] * len(self.token_labels[row]) if padding else self.token_labels[row]
        item["word_labels"] = [IGNORE_INDEX] * len(self.word_tags[row]) if padding else self.word_tags[row]
        item["word_starts"] = self.word_starts[row]
        item["groups"] = self.groups[row]
        item["index"] = row
        return item


def _padded(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long)


class TagPaddingCollator:
    """Pads token fields on the right (so first-sub-token positions stay valid), sub-token ``labels`` to the same
    length and the word-level ``word_labels`` / ``word_starts`` to the longest sentence of the batch."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [item.pop("labels") for item in items]
        word_labels = [item.pop("word_labels") for item in items]
        word_starts = [item.pop("word_starts") for item in items]
        groups = torch.stack([item.pop("groups") for item in items])
        index = torch.tensor([item.pop("index") for item in items], dtype=torch.long)
        batch = dict(self.tokenizer.pad(items, return_tensors="pt", padding_side="right"))
        words = max(len(row) for row in word_labels)
        batch["labels"] = _padded(labels, batch["input_ids"].shape[1], IGNORE_INDEX)
        batch["word_labels"] = _padded(word_labels, words, IGNORE_INDEX)
        batch["word_starts"] = _padded(word_starts, words, -1)
        batch["groups"] = groups
        batch["index"] = index
        return batch
