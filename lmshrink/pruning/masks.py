"""A gate on a module's input as a forward pre-hook: how structured pruning masks units without touching weights
(spec §1.1, pitfall §5.3). HF ``head_mask`` is unsupported by SDPA/flash attention; a pre-hook on the output
projection scales each unit's slice of its input, whatever attention kernel runs. Gates may be non-binary (tuned
scales). Encoders gate heads and neurons (:mod:`lmshrink.pruning.encoder.gates`), decoders key/value groups and
MLP channels (:mod:`lmshrink.pruning.decoder.structure`).
"""

from __future__ import annotations

from torch import Tensor, nn


def scale_input(mask: Tensor):
    """A forward pre-hook multiplying a module's first input by ``mask`` (broadcast over its last dimension)."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        (hidden,) = args[:1]
        return (hidden * mask.to(device=hidden.device, dtype=hidden.dtype),) + tuple(args[1:])

    return hook
