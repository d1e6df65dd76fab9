"""Teacher logits cached to disk (top-k per example), so epochs after the first skip the teacher forward.

The teacher runs in eval mode, so its logits are a pure function of the input: caching them is exact
(with k equal to the number of classes) or the usual top-k approximation (many classes). Causal-LM teachers
(per-token vocabulary logits) are not cached.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor


def cache_fingerprint(*parts) -> str:
    """A short name that changes when the teacher, the data or k change."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


@torch.no_grad()
def compute_topk_logits(teacher_logits: Callable[[dict], Tensor], batches: Iterable[dict], size: int, k: int
                        ) -> dict[str, Tensor]:
    """Run the teacher over every example once; keep the k largest logits and their class ids per example.

    ``batches`` must carry ``index`` (row of each example); ``size`` is the number of examples.
    """
    values = indices = None
    for batch in batches:
        logits = teacher_logits(batch).float()
        top_values, top_indices = logits.topk(min(k, logits.shape[-1]), dim=-1)
        if values is None:
            values = torch.zeros(size, *top_values.shape[1:])
            indices = torch.zeros(size, *top_indices.shape[1:], dtype=torch.long)
        rows = batch["index"].cpu()
        values[rows], indices[rows] = top_values.cpu(), top_indices.cpu()
    return {"values": values, "indices": indices}


def load_or_build(path: Path, build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    cache = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(cache, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated cache behind
    return cache
