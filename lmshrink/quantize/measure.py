"""Size and CPU latency of a model, quantized or not, measured the same way for every scheme."""

from __future__ import annotations

import io
import statistics
import time

import torch
from torch import nn


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
    """Median wall time of one forward pass, in milliseconds."""
    model.eval()
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**inputs)
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
