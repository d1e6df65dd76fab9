"""The precision of a pruning method's gradient passes (K-prune's knowledge scores, Kwon et al.'s Fisher
gradients): float32, or bf16 autocast when the run itself is ``bf16-mixed`` (issue 30: pruning's captures and
scores in bf16 where the CPU has it).

Only the passes that *rank* units run in bf16: their gradients and activation energies are sums over thousands
of tokens, compared with each other (K-prune's teacher soft labels are computed in the same precision, so that an
unpruned student has no predictive knowledge to lose in either). What the pruning spec fits stays in higher
precision: the dense teacher's targets, the stored layer inputs and every least-squares capture are float32
forwards outside this context, and the solves fp64.

On a CPU, attention runs PyTorch's math backend inside the context: its flash-attention kernel is slow backward
in bf16 (280 against 117 ms for one K-prune scoring step of MiniLM, batch 31 x 40, measured on an AMX Xeon),
which would hide the 2.5x faster bf16 forward; in float32 the two backends take the same time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ScorePrecision = Literal["32", "bf16"]
"""``"32"``: float32 passes; ``"bf16"``: bf16 autocast (the float32 model, its matrix products in bf16)."""


def score_precision_of(run_precision: str | None) -> ScorePrecision:
    """The score precision of a Lightning run's precision: ``bf16`` for ``bf16-mixed`` / ``bf16-true``, float32
    otherwise (fp16 gradients of masks would underflow: ``16-mixed`` scores in float32)."""
    return "bf16" if str(run_precision).startswith("bf16") else "32"


@contextlib.contextmanager
def scoring(precision: ScorePrecision, device: torch.device | str) -> Iterator[None]:
    """Run a scoring forward and backward in ``precision`` on ``device``."""
    if precision == "32":
        yield
        return
    if precision != "bf16":
        raise ValueError(f"score precision {precision!r}: choose '32' or 'bf16'")
    device_type = torch.device(device).type
    backend = sdpa_kernel(SDPBackend.MATH) if device_type == "cpu" else contextlib.nullcontext()
    with torch.autocast(device_type, dtype=torch.bfloat16), backend:
        yield
