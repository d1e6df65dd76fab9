"""Which weights a one-shot method zeroes, given a score per weight (low score = pruned): per output row at a
sparsity, or N:M semi-structured (N kept in every M consecutive input weights of a row).

Wanda (Sun et al. 2024, §3) compares weights within each output row; its N:M variant and SparseGPT's take the
lowest ``M - N`` of every group of M input columns, as the official codes do (``topk(..., largest=False)``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def parse_n_m(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> (2, 4): N weights kept in every M (the hardware's 2:4 keeps 2 of 4)."""
    try:
        n, m = (int(part) for part in pattern.split(":"))
    except ValueError:
        raise ValueError(f"N:M pattern {pattern!r} must look like '2:4'") from None
    if not 0 < n < m:
        raise ValueError(f"N:M pattern {pattern!r} needs 0 < N < M")
    return n, m


def row_mask(scores: Tensor, sparsity: float) -> Tensor:
    """``[rows, cols]`` bool, True = pruned: the ``int(cols * sparsity)`` lowest scores of every row (stable
    order among ties, as the official Wanda code sorts)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity} must be in [0, 1)")
    return lowest(scores, int(scores.shape[1] * sparsity))


def lowest(scores: Tensor, count: int) -> Tensor:
    """Bool mask of ``scores``' shape, True at the ``count`` lowest entries of each row (last dimension), ties to
    the earlier column and NaN highest: the first ``count`` of a stable ascending sort, the official codes'
    choice, found by ``kthvalue`` in linear time (SparseGPT's sort of each 128-column block took 9 of the 48 s of
    pruning SmolLM2 on 2 cores)."""
    if count <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    kth = scores.kthvalue(count, dim=-1, keepdim=True).values
    nan, kth_nan = scores.isnan(), kth.isnan()
    below = (scores < kth) | (kth_nan & ~nan)
    ties = (scores == kth) | (nan & kth_nan)
    return below | (ties & (ties.cumsum(-1) <= count - below.sum(-1, keepdim=True)))


def n_m_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """``[rows, cols]`` bool, True = pruned: in every row, the ``m - n`` lowest scores of each group of ``m``
    consecutive columns (``cols`` must be a multiple of ``m``)."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{cols} input features are not a multiple of M={m}")
    groups = scores.reshape(rows, cols // m, m)
    lowest = torch.topk(groups, m - n, dim=2, largest=False).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(2, lowest, True).reshape(rows, cols)
