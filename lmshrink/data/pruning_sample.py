"""The pruning sample (spec §3.4, §5.9): drawn once with a seed, batched in a fixed order, never shuffled.

Both methods compare passes row by row (K-prune matches student features to teacher outputs of the same
tokens), so every pass must see the same batches with the same padding. Drawing is with replacement, as in
both official codes. The drawn rows are ordered by length, which keeps padding (wasted compute) low and is
still one fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor


def samples_for_tokens(num_tokens: int, mean_length: float, num_rows: int) -> int:
    """``min(floor(num_tokens / mean_length), num_rows)``: K-prune sizes its sample in tokens."""
    if num_tokens <= 0 or mean_length <= 0:
        raise ValueError(f"num_tokens={num_tokens} and mean_length={mean_length} must be positive")
    return max(1, min(math.floor(num_tokens / mean_length), num_rows))


def draw_sample(lengths: Sequence[int], num_samples: int, seed: int) -> np.ndarray:
    """Row indices drawn with replacement by a seeded generator, then stably ordered by length."""
    if len(lengths) == 0:
        raise ValueError("cannot draw a pruning sample from an empty training split")
    rows = np.random.default_rng(seed).choice(len(lengths), size=num_samples, replace=True)
    return rows[np.argsort(np.asarray(lengths)[rows], kind="stable")]


def sample_batches(dataset: Sequence[dict], rows: np.ndarray, collate: Callable[[list[dict]], dict[str, Tensor]],
                   batch_size: int, keys: Sequence[str]) -> list[dict[str, Tensor]]:
    """Collated batches of ``rows`` in order, each keeping only ``keys`` (model inputs, and labels if needed)."""
    batches = []
    for start in range(0, len(rows), batch_size):
        batch = collate([dataset[int(row)] for row in rows[start:start + batch_size]])
        batches.append({key: batch[key] for key in keys if key in batch})
    return batches
