"""The CPU a figure was measured on: its name and the features that decide which int8 / bf16 kernels run.

Speed and latency figures mean little without the machine (an AMX Xeon and an AMD EPYC rank the schemes
differently), so every figure lmshrink writes (benchmarks, the Quantize record, model cards) carries this line.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

FEATURES = ("avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
"""The ``/proc/cpuinfo`` flags that select CPU int8 / bf16 kernels (VNNI, AVX512-BF16, AMX)."""


def cpu_name_and_flags(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """(model name, the :data:`FEATURES` it has) from ``/proc/cpuinfo`` (or the text given); the platform's
    processor string and no flags where there is no such file."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.is_file():
            return platform.processor() or platform.machine(), []
        cpuinfo = path.read_text()
    lines = cpuinfo.splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return name, [flag for flag in FEATURES if flag in flags]


def cpu_line(cpuinfo: str | None = None) -> str:
    """``AMD EPYC 9R14 (avx512_vnni, avx512_bf16)``: the CPU and its int8 / bf16 features, for beside a figure."""
    name, flags = cpu_name_and_flags(cpuinfo)
    return f"{name} ({', '.join(flags) or 'no AVX-512 VNNI / BF16 / AMX'})"


BF16_FEATURES = ("avx512_bf16", "amx_bf16")
"""CPU flags with native bf16 arithmetic: without one, bf16 autocast runs emulated and is slower than float32."""

PrecisionChoice = Literal["auto", "32-true", "bf16-mixed"]
"""How lmshrink's studies run training and evaluation: Lightning's own ``32-true`` or ``bf16-mixed`` (bf16 autocast,
float32 weights and optimizer), or ``auto``: ``bf16-mixed`` where the machine has bf16 kernels, else ``32-true``."""


def has_bf16(device_type: str | None = None, cpuinfo: str | None = None) -> bool:
    """Whether bf16 runs natively on ``device_type`` (default: CUDA when present, else the CPU): a CUDA GPU that
    supports it, or a CPU with AVX512-BF16 or AMX-BF16."""
    import torch

    if device_type is None:
        device_type = "cuda" if cpuinfo is None and torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in BF16_FEATURES for flag in cpu_name_and_flags(cpuinfo)[1])


def resolve_precision(choice: PrecisionChoice, cpuinfo: str | None = None) -> str:
    """The Lightning ``precision`` that ``choice`` means on this machine (``auto``: by :func:`has_bf16`)."""
    if choice == "auto":
        return "bf16-mixed" if has_bf16(cpuinfo=cpuinfo) else "32-true"
    return choice


def precision_line(precision: str, device_type: str = "cpu", cpuinfo: str | None = None) -> str:
    """One line for a run's log: the precision, the machine, and a warning where bf16 would run emulated."""
    where = cpu_line(cpuinfo) if device_type == "cpu" else device_type
    line = f"precision: {precision} on {where}"
    if "bf16" in str(precision) and not has_bf16(device_type, cpuinfo):
        line += " -- no native bf16 here (AVX512-BF16 / AMX): bf16 runs emulated, slower than 32-true"
    return line
