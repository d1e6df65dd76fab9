"""Least squares for pruning's weight/mask tuning, from normal equations accumulated batch by batch.

Streaming (spec §5.6): only ``A^T A``, ``A^T B`` and ``||B||^2`` are kept, never the token-level features.
They are accumulated in fp64 (normal equations square the condition number, spec §5.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


GRAM_BLOCK = 384
"""Columns per block of the blocked ``A^T A`` (only blocks on or above the diagonal are computed)."""


class NormalEquations:
    """Running ``A^T A`` ``[n, n]``, ``A^T B`` ``[n, m]`` and ``||B||_F^2`` of ``min_W ||A W - B||``.

    ``A^T A`` is symmetric: it is accumulated block by block (:data:`GRAM_BLOCK` columns), only the blocks on or
    above the diagonal, in place, and assembled when read. For K-prune's FFN targets (n = the FFN width) that is
    the larger part of the time outside the network: measured 2x faster than one ``a.T @ a`` per batch on the
    2-core CPU (fp64 either way; the sums differ only in rounding order).
    """

    def __init__(self, gram: Tensor | None = None, cross: Tensor | None = None, target_sq: float = 0.0,
                 rows: int = 0) -> None:
        self._gram, self.cross, self.target_sq, self.rows = gram, cross, target_sq, rows
        self._blocks: dict[tuple[int, int], Tensor] = {}  # added since the gram was last assembled
        self._edges: list[int] = []

    def add(self, features: Tensor, target: Tensor) -> None:
        """Add rows: ``features`` ``[T, n]`` (A) and ``target`` ``[T, m]`` (B)."""
        a, b = features.detach().double().cpu(), target.detach().double().cpu()  # small; fp64 is slow on GPUs
        if not self._edges:
            self._edges = [*range(0, a.shape[1], GRAM_BLOCK), a.shape[1]]
        columns = [a[:, low:high].contiguous() for low, high in zip(self._edges, self._edges[1:])]
        for i, left in enumerate(columns):
            for j in range(i, len(columns)):
                if (i, j) not in self._blocks:
                    self._blocks[i, j] = torch.zeros(left.shape[1], columns[j].shape[1], dtype=torch.float64)
                self._blocks[i, j].addmm_(left.T, columns[j])
        cross = a.T @ b
        self.cross = cross if self.cross is None else self.cross + cross
        self.target_sq += float((b * b).sum())
        self.rows += a.shape[0]

    @property
    def gram(self) -> Tensor | None:
        if self._blocks:
            n, edges = self._edges[-1], self._edges
            full = torch.zeros(n, n, dtype=torch.float64)
            for (i, j), block in self._blocks.items():
                full[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = block
                full[edges[j]:edges[j + 1], edges[i]:edges[i + 1]] = block.T
            self._gram = full if self._gram is None else self._gram + full
            self._blocks = {}
        return self._gram

    def restricted(self, index: Tensor) -> NormalEquations:
        """The problem over the columns ``index`` of A only (the surviving units)."""
        return NormalEquations(self.gram[index][:, index], self.cross[index], self.target_sq, self.rows)

    def error(self, weight: Tensor) -> float:
        """``||A W - B||_F^2 = tr(W^T G W) - 2 tr(W^T C) + ||B||^2``, exactly, without A or B."""
        w = weight.double()
        return float((w * (self.gram @ w)).sum() - 2 * (w * self.cross).sum() + self.target_sq)


@dataclass
class Solution:
    weight: Tensor
    error_before: float
    error_after: float
    condition: float
    accepted: bool
    notes: list[str] = field(default_factory=list)


def solve_never_worse(problem: NormalEquations, current: Tensor, ridge: float = 1e-6) -> Solution:
    """``argmin_W ||A W - B||^2 + ridge * mean(diag G) * ||W||^2`` by Cholesky in fp64 (``lstsq`` with the
    ``gelsd`` driver when G is not positive definite). The current weights are a feasible point: if the new
    ones reconstruct the sample worse, the current ones are returned (spec §5.5)."""
    gram, cross = problem.gram, problem.cross
    notes = []
    damping = ridge * float(gram.diagonal().mean()) if gram.numel() else 0.0
    system = gram + damping * torch.eye(gram.shape[0], dtype=gram.dtype)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        weight = torch.cholesky_solve(cross, factor)
    else:
        notes.append("gram not positive definite: lstsq (gelsd)")
        weight = torch.linalg.lstsq(system, cross, driver="gelsd").solution
    condition = float(torch.linalg.cond(system)) if gram.numel() else 1.0
    before, after = problem.error(current), problem.error(weight)
    accepted = bool(torch.isfinite(weight).all()) and after <= before
    if not accepted:
        notes.append("tuned weights reconstruct the sample worse: kept the current ones")
    return Solution(weight if accepted else current.double(), before, after, condition, accepted, notes)


def solve_faithful(problem: NormalEquations, current: Tensor) -> Solution:
    """The official K-prune solve: ``lstsq(A^T A, A^T B, rcond=0)`` in fp32, no damping, no fallback check;
    a failure leaves the weights as they are."""
    before = problem.error(current)
    try:
        weight = torch.linalg.lstsq(problem.gram.float(), problem.cross.float(), rcond=0).solution.double()
    except RuntimeError as error:
        return Solution(current.double(), before, before, float("nan"), False, [f"lstsq failed: {error}"])
    return Solution(weight, before, problem.error(weight), float("nan"), True, [])


def ridge_towards_one(gram: Tensor, cross: Tensor, damping: float = 1.0) -> Tensor:
    """Kwon et al.'s mask-scale solve: LSMR with ``damp`` on the square system ``G x = c`` after ``x = 1 + y``,
    i.e. ``min_y ||G y - (c - G 1)||^2 + damp^2 ||y||^2``, in closed form: ``y = (G^T G + damp^2 I)^-1 G^T r``."""
    gram, cross = gram.double(), cross.double().flatten()
    residual = cross - gram @ torch.ones_like(cross)
    system = gram.T @ gram + damping**2 * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return 1 + torch.linalg.solve(system, gram.T @ residual)


def scale_normal_equations(activations: Tensor, weight: Tensor, kept: Tensor, unit_dim: int, target: Tensor,
                           ones_column: bool = False) -> tuple[Tensor, Tensor]:
    """``A^T A`` and ``A^T B`` of Kwon et al.'s mask tuning for one output projection: column i of A is kept unit
    i's contribution to the projection's output (its ``unit_dim`` input dimensions through their weight columns),
    flattened over tokens and outputs; B is ``target`` ``[T, d]``. ``activations`` ``[T, units * unit_dim]`` are the
    projection's inputs, ``weight`` ``[d, units * unit_dim]``. Units of one dimension (neurons, channels) use the
    factorised form, which never builds the ``[T, kept, d]`` contributions. ``ones_column``: a constant column
    appended last (the official code's MHA quirk)."""
    activations, weight, target = activations.double(), weight.double(), target.double()
    kept = kept.to(weight.device)
    if unit_dim == 1 and not ones_column:
        hidden, columns = activations[:, kept], weight[:, kept]  # [T, kept], [d, kept]
        return (columns.T @ columns) * (hidden.T @ hidden), (hidden * (target @ columns)).sum(0)
    context = activations.view(len(activations), -1, unit_dim)[:, kept]
    unit_weights = weight.view(weight.shape[0], -1, unit_dim)[:, kept]
    contributions = torch.einsum("tkd,okd->tko", context, unit_weights)  # [T, kept, d]
    if ones_column:
        contributions = torch.cat([contributions, torch.ones_like(contributions[:, :1])], dim=1)
    return (torch.einsum("tio,tjo->ij", contributions, contributions),
            torch.einsum("tio,to->i", contributions, target))
