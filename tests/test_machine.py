"""The machine facts that choose a precision: bf16 is native only with AVX512-BF16 or AMX-BF16, and ``auto``
picks bf16-mixed there and float32 elsewhere (a run on an emulating CPU says so in its log)."""

from __future__ import annotations

import pytest

from lmshrink.machine import has_bf16, precision_line, resolve_precision

EPYC = "model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx512f avx512_vnni avx512_bf16\n"
XEON_AMX = "model name\t: Intel Xeon Platinum 8488C\nflags\t\t: avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n"
OLD_XEON = "model name\t: Intel Xeon Platinum 8175M\nflags\t\t: avx512f avx512_vnni\n"


@pytest.mark.parametrize("cpuinfo, native", [(EPYC, True), (XEON_AMX, True), (OLD_XEON, False)])
def test_auto_is_bf16_mixed_only_where_bf16_is_native(cpuinfo, native):
    assert has_bf16("cpu", cpuinfo) is native
    assert resolve_precision("auto", cpuinfo) == ("bf16-mixed" if native else "32-true")
    assert resolve_precision("32-true", cpuinfo) == "32-true"  # an explicit choice is kept
    assert resolve_precision("bf16-mixed", OLD_XEON) == "bf16-mixed"


def test_the_log_line_names_the_cpu_and_warns_where_bf16_is_emulated():
    assert precision_line("bf16-mixed", "cpu", EPYC) == "precision: bf16-mixed on AMD EPYC 9R14 (avx512_vnni, avx512_bf16)"
    assert "emulated" in precision_line("bf16-mixed", "cpu", OLD_XEON)
    assert "emulated" not in precision_line("32-true", "cpu", OLD_XEON)
