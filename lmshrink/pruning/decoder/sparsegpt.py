"""SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
ICML 2023): per Linear, an approximate OBS solve with the Hessian ``H = 2 X X^T`` of the layer-wise
reconstruction loss, processed in column blocks: within a block the mask is chosen adaptively from
``w^2 / [H^-1]_jj^2`` and each pruned column's error is spread over the not-yet-processed columns through the
Cholesky factor of ``H^-1`` (§3-4, Algorithm 1).

A transcription of the official ``SparseGPT.fasterprune`` (github.com/IST-DASLab/sparsegpt, as vendored in
github.com/locuslab/wanda ``lib/sparsegpt.py``), in float32 like it, with one deliberate difference: an
unstructured block prunes exactly ``int(numel * sparsity)`` weights, where the official threshold
``tmp <= sort(tmp)[int(numel * sparsity)]`` prunes one more per block. N:M is identical (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmshrink.pruning.sparsity_masks import lowest


class Hessian:
    """Accumulates ``H = 2/n * sum_t x_t x_t^T`` over calibration tokens of one Linear (float32, as the official
    code; any positive scale gives the same result, the damping being relative to ``mean(diag H)``)."""

    def __init__(self, in_features: int) -> None:
        self.matrix = torch.zeros(in_features, in_features, dtype=torch.float32)
        self.tokens = 0

    def add(self, inputs: Tensor) -> None:
        flat = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float32)
        total = self.tokens + flat.shape[0]
        self.matrix = self.matrix.to(flat.device) * (self.tokens / total)
        self.tokens = total
        scaled = flat * (2 / total) ** 0.5
        self.matrix += scaled.T @ scaled


def inverse_hessian_factor(hessian: Tensor, percdamp: float) -> tuple[Tensor, Tensor]:
    """(upper Cholesky factor of ``(H + damp I)^-1``, dead input columns): ``damp = percdamp * mean(diag H)``;
    an input that is always zero gets ``H_jj = 1`` so the factorisation exists (its weights are zeroed)."""
    hessian = hessian.clone()
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1
    damp = percdamp * torch.mean(torch.diag(hessian))
    hessian.diagonal().add_(damp)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
    return torch.linalg.cholesky(inverse, upper=True), dead


@torch.no_grad()
def sparsegpt_prune(weight: Tensor, hessian: Tensor, sparsity: float | None = None, n_m: tuple[int, int] | None = None,
                    blocksize: int = 128, percdamp: float = 0.01) -> Tensor:
    """The pruned and updated weight ``[out, in]`` (same dtype as ``weight``): unstructured at ``sparsity`` (per
    column block) or N:M (``n_m = (N, M)``: N kept in every M consecutive inputs)."""
    if (sparsity is None) == (n_m is None):
        raise ValueError("give exactly one of sparsity and n_m")
    if sparsity is not None and not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity} must be in [0, 1)")
    if n_m is not None and blocksize % n_m[1]:
        raise ValueError(f"blocksize={blocksize} must be a multiple of M={n_m[1]}")
    W = weight.detach().clone().to(torch.float32)
    columns = W.shape[1]
    Hinv, dead = inverse_hessian_factor(hessian.to(W.device, torch.float32), percdamp)
    W[:, dead] = 0
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        diagonal = torch.diag(Hinv1)
        if n_m is None:
            scores = W1 ** 2 / diagonal.reshape(1, -1) ** 2
            mask1 = lowest(scores.flatten(), int(scores.numel() * sparsity)).reshape(W1.shape)
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if n_m is not None and i % n_m[1] == 0:
                scores = W1[:, i:i + n_m[1]] ** 2 / diagonal[i:i + n_m[1]].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(scores, n_m[1] - n_m[0], dim=1, largest=False).indices, True)
            q = w.masked_fill(mask1[:, i], 0)
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W.to(weight.dtype)
