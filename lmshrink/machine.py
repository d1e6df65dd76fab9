"""The CPU a figure was measured on: its name and the features that decide which int8 / bf16 kernels run.

Speed and latency figures mean little without the machine (an AMX Xeon and an AMD EPYC rank the schemes
differently), so every figure lmshrink writes (benchmarks, the Quantize record, model cards) carries this line.
"""

from __future__ import annotations

import platform
from pathlib import Path

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
