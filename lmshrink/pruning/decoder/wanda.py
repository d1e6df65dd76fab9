"""Wanda (Sun et al., "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024).

A weight's score is its magnitude times the L2 norm of the input feature it multiplies, over the calibration
tokens: ``S_ij = |W_ij| * ||X_j||_2`` (§3, Eq. 1); weights are compared per output row. No weight update.
Checked against the official code (github.com/locuslab/wanda, ``lib/prune.py::prune_wanda`` and
``lib/layerwrapper.py``): it keeps the mean squared norm per sequence, a constant factor that changes no ranking.
"""

from __future__ import annotations

import torch
from torch import Tensor


class InputNorms:
    """Accumulates ``||X_j||_2^2`` per input feature of one Linear over calibration batches (float64)."""

    def __init__(self, in_features: int) -> None:
        self.squared = torch.zeros(in_features, dtype=torch.float64)
        self.tokens = 0

    def add(self, inputs: Tensor) -> None:
        """``inputs``: the Linear's input ``[..., in_features]``."""
        flat = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float64)
        self.squared = self.squared.to(flat.device) + flat.pow(2).sum(dim=0)
        self.tokens += flat.shape[0]


def wanda_scores(weight: Tensor, squared_norms: Tensor) -> Tensor:
    """``|W| * ||X||_2`` broadcast over rows: ``weight`` ``[out, in]``, ``squared_norms`` ``[in]``."""
    return weight.detach().abs().to(torch.float64) * squared_norms.to(weight.device).sqrt().unsqueeze(0)
