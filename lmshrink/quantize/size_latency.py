"""Size, CPU latency and compute of a model, quantized or not, measured the same way for every scheme."""

from __future__ import annotations

import io
import statistics
import time
from collections import Counter

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


def _tensor_bytes(tensor: torch.Tensor, seen: set[int]) -> int:
    """Bytes of a tensor's storage, looking inside tensor subclasses (torchao) via ``__tensor_flatten__``."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) is not torch.Tensor and type(tensor) is not nn.Parameter:
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name), seen) for name in names)
    storage = tensor.untyped_storage()
    key = storage.data_ptr()
    if key in seen:
        return 0
    seen.add(key)
    return storage.nbytes()


def memory_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters, buffers and quantization state (shared storage counted once).

    Quantized layers keep their scales outside ``parameters()`` (bitsandbytes ``SCB`` and ``quant_state``,
    PyTorch packed params), so the state dict, which every backend fills completely, is what is counted.
    """
    seen: set[int] = set()
    total = 0
    for value in model.state_dict(keep_vars=True).values():
        if isinstance(value, torch.Tensor):
            total += _tensor_bytes(value, seen)
        elif isinstance(value, tuple):  # torch.ao dynamic linear: (packed weight, bias)
            total += sum(_tensor_bytes(v, seen) for v in value if isinstance(v, torch.Tensor))
    return total


def disk_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``, the checkpoint a user would write."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


@torch.inference_mode()
def latency_ms(model: nn.Module, inputs: dict[str, torch.Tensor], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of one forward pass, in milliseconds (on a GPU, up to the end of its kernels)."""
    model.eval()
    sync = torch.cuda.synchronize if any(tensor.is_cuda for tensor in inputs.values()) else (lambda: None)
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        model(**inputs)
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def alternating_latency_ms(runs: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]], rounds: int = 5,
                           repeats: int = 3) -> dict[str, float]:
    """Median ms per forward of every ``{name: (model, inputs)}``, timed in alternating rounds so that a change in
    machine load hits every model alike (the way compared latencies are measured side by side)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (model, inputs) in runs.items():
            times[name].append(latency_ms(model, inputs, repeats=repeats, warmup=1))
    return {name: statistics.median(values) for name, values in times.items()}


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of every non-empty Linear: the GEMMs a forward pass runs per token."""
    return [(module.in_features, module.out_features) for module in model.modules()
            if isinstance(module, nn.Linear) and module.in_features * module.out_features]


def linear_flops(model: nn.Module, tokens: int) -> int:
    """FLOPs (2 per multiply-add) of the model's Linear layers over ``tokens`` tokens."""
    return sum(2 * tokens * fan_in * fan_out for fan_in, fan_out in linear_shapes(model))


@torch.inference_mode()
def gemm_rate(shapes: list[tuple[int, int]], tokens: int, dtype: torch.dtype, repeats: int = 10,
              device: str | torch.device = "cpu") -> float:
    """FLOP/s of plain matrix products of the given Linear shapes at ``tokens`` rows, in ``dtype`` (``torch.int8``:
    ``torch._int_mm``, int32 accumulation): what this machine's GEMM kernels deliver on the model's own shapes,
    the bound that a quantized path's Linears approach at best. Median over ``repeats`` runs of all shapes."""
    generator = torch.Generator().manual_seed(0)
    if dtype == torch.int8 and torch.device(device).type == "cuda":
        # cuBLAS' int8 product needs both sizes of the right factor to be multiples of 8 (a head of 3 classes is not)
        shapes = [(fan_in, fan_out) for fan_in, fan_out in shapes if fan_in % 8 == 0 and fan_out % 8 == 0]
    operands = []
    for fan_in, fan_out in shapes:
        left = torch.randn(tokens, fan_in, generator=generator)
        right = torch.randn(fan_in, fan_out, generator=generator)
        if dtype == torch.int8:
            left, right = (left * 40).clamp(-127, 127).to(torch.int8), (right * 40).clamp(-127, 127).to(torch.int8)
        else:
            left, right = left.to(dtype), right.to(dtype)
        operands.append((left.to(device), right.to(device)))
    product = torch._int_mm if dtype == torch.int8 else torch.mm
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def run() -> None:
        for left, right in operands:
            product(left, right)
        sync()

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sum(2 * tokens * fan_in * fan_out for fan_in, fan_out in shapes) / statistics.median(times)


_PRODUCT_OPERANDS = {torch.ops.aten.mm: (0, 1), torch.ops.aten.bmm: (0, 1), torch.ops.aten.addmm: (1, 2),
                     torch.ops.aten.addmm_: (1, 2), torch.ops.aten.baddbmm: (1, 2)}
"""The matrix products :class:`MatmulFlops` counts: aten op -> positions of its two factors in ``args``."""


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs (2 per multiply-add) of the matrix products run inside the block, per dtype, forward and
    backward alike: ``with MatmulFlops() as flops: ...``, then ``flops.by_dtype``. It answers how fast a workload
    could be at best: its FLOPs divided by :func:`gemm_rate` of their dtype. Unlike torch's ``FlopCounterMode``
    it keeps dtypes apart (an fp64 least-squares product costs several fp32 ones) and counts in-place products
    (``addmm_``); attention kernels are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.by_dtype: Counter[torch.dtype] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        operands = _PRODUCT_OPERANDS.get(func.overloadpacket)
        if operands is not None:
            left, right = args[operands[0]], args[operands[1]]
            self.by_dtype[left.dtype] += 2 * left.numel() * right.shape[-1]
        return func(*args, **(kwargs or {}))
