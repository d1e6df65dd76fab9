"""The group metrics run on a GPU as on the CPU. CI has no GPU, so what broke the first GPU fit is checked here:
CUDA has no integer matrix product (``"addmm_cuda" not implemented for 'Long'``), which the CPU silently has."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lmshrink.metrics.comparison import GroupComparison

MATRIX_PRODUCTS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
                   torch.ops.aten.baddbmm.default, torch.ops.aten.mv.default, torch.ops.aten.dot.default}


class NoIntegerMatmul(TorchDispatchMode):
    """Fails an integer matrix product, as CUDA does."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATRIX_PRODUCTS:
            dtypes = {arg.dtype for arg in args if isinstance(arg, torch.Tensor)}
            if any(not dtype.is_floating_point and not dtype.is_complex for dtype in dtypes):
                raise NotImplementedError(f"{func} on {sorted(map(str, dtypes))}: no integer matmul on CUDA")
        return func(*args, **(kwargs or {}))


def test_every_group_metric_updates_without_an_integer_matrix_product_and_computes_to_the_cpu():
    generator = torch.Generator().manual_seed(0)
    comparison = GroupComparison(["a", "b", "c"], num_classes=3, reference="teacher")
    expected = GroupComparison(["a", "b", "c"], num_classes=3, reference="teacher")
    for _ in range(3):
        logits, reference_logits = torch.randn(16, 3, generator=generator), torch.randn(16, 3, generator=generator)
        labels, groups = torch.randint(0, 3, (16,), generator=generator), torch.randint(0, 3, (16,), generator=generator)
        arguments = (logits.argmax(-1), logits, labels, groups, reference_logits.argmax(-1), reference_logits)
        with NoIntegerMatmul():
            comparison.update(*arguments)
        expected.update(*arguments)
    results = comparison.compute()
    assert all(value.device.type == "cpu" for metric in results.values() for value in metric.values()
               if isinstance(value, torch.Tensor))
    for name, metric in expected.compute().items():  # the same counts as without the guard
        for key, value in metric.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(results[name][key], value, equal_nan=True, rtol=0, atol=0)
    counts = results["agreement"]
    assert counts["flip_rate"] > 0 and int(results["calibration"]["bin_count"].sum()) == 48
