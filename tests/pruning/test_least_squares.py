"""Spec §7.9: the streamed normal equations give the exact error, the solve is optimal and never worse than the
current weights on its own sample, and Kwon's damped solve minimises its regularised objective."""

from __future__ import annotations

import torch

from lmshrink.pruning.least_squares import NormalEquations, ridge_towards_one, solve_never_worse


def problem(seed: int = 0, rows: int = 200, features: int = 12, outputs: int = 5):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, features, generator=generator)
    b = a @ torch.randn(features, outputs, generator=generator) + 0.3 * torch.randn(rows, outputs, generator=generator)
    equations = NormalEquations()
    for start in range(0, rows, 37):  # streamed in uneven chunks
        equations.add(a[start:start + 37], b[start:start + 37])
    return a.double(), b.double(), equations


def test_streamed_error_is_exact():
    a, b, equations = problem()
    weight = torch.randn(12, 5, dtype=torch.float64)
    assert equations.rows == 200
    assert abs(equations.error(weight) - float((a @ weight - b).pow(2).sum())) < 1e-6


def test_solution_is_optimal_and_never_worse():
    a, b, equations = problem()
    current = torch.randn(12, 5, dtype=torch.float64)
    exact = solve_never_worse(equations, current, ridge=0.0)
    # normal-equation optimality: A^T (A W - B) = 0 (fp64)
    residual = a.T @ (a @ exact.weight - b)
    assert residual.abs().max() / (a.T @ b).abs().max() < 1e-8
    damped = solve_never_worse(equations, current)
    assert damped.accepted and damped.error_after <= damped.error_before
    assert (a @ damped.weight - b).pow(2).sum() <= (a @ current - b).pow(2).sum()


def test_a_worse_solution_is_refused():
    a, b, equations = problem()
    best = torch.linalg.lstsq(a, b).solution
    heavy = solve_never_worse(equations, best, ridge=10.0)  # strong ridge: worse fit than the optimum we hold
    assert not heavy.accepted
    torch.testing.assert_close(heavy.weight, best)


def test_kwon_damped_solve_minimises_its_objective():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(50, 4, generator=generator, dtype=torch.float64)
    gram, cross = features.T @ features, features.T @ torch.randn(50, generator=generator, dtype=torch.float64)
    scales = ridge_towards_one(gram, cross)
    y = (scales - 1).requires_grad_(True)
    objective = (gram @ y - (cross - gram @ torch.ones(4, dtype=torch.float64))).pow(2).sum() + y.pow(2).sum()
    (gradient,) = torch.autograd.grad(objective, y)
    assert gradient.abs().max() < 1e-8
    # a target that the unscaled units already produce gives scales of exactly 1
    torch.testing.assert_close(ridge_towards_one(gram, gram @ torch.ones(4, dtype=torch.float64)),
                               torch.ones(4, dtype=torch.float64))
