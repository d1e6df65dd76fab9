"""``torch.compile`` for inference, and the time its first call takes (compilation), reported apart from the
steady-state latency.

Freezing makes the weights graph constants, which lets inductor prepack them for oneDNN's bf16 / int8 kernels
and fold the quantization arithmetic around them; the x86 int8 lowering of the PT2E flow needs it (without it
inductor meets ``onednn.qlinear_prepack`` on a graph input and fails). It is an inductor setting read at each
compilation, and compilation happens at the first call of every new input shape, so the wrapper below turns it
on around every call rather than for the whole process.
"""

from __future__ import annotations

import functools
import time

import torch
from torch import Tensor, nn


class CompiledForInference(nn.Module):
    """``source`` compiled by inductor with freezing; ``source`` (which holds the weights) stays reachable.

    ``mixed_bf16``: compile and run under bf16 autocast, so that everything around int8 GEMMs (attention, softmax,
    LayerNorm, the float head) runs in bf16 — PyTorch's "int8-mixed-bf16" recipe for the x86 PT2E flow; the
    outputs are bf16. ``int8_attention``: compile with torchao's qsdpa pass, which replaces each attention whose
    matmuls were quantized (q, k, v, the softmax and the output all quantize / dequantize) by one int8 attention
    kernel, generated for AMX (:func:`~lmshrink.quantize.static_int8.amx_tiles_usable`), compiled for static shapes."""

    def __init__(self, source: nn.Module, mixed_bf16: bool = False, int8_attention: bool = False) -> None:
        super().__init__()
        self.source = source
        self.mixed_bf16 = mixed_bf16
        self.int8_attention = int8_attention
        # torchao's int8 attention kernel template takes static shapes only (a dynamic batch died of an illegal
        # instruction, a dynamic length failed to compile): one graph per input shape then
        self.compiled = torch.compile(source, dynamic=False if int8_attention else None)

    def forward(self, *args, **kwargs):
        import torch._inductor.config as inductor_config

        passes = {"post_grad_custom_pre_pass": qsdpa_pass()} if self.int8_attention else {}
        with inductor_config.patch(freezing=True, **passes), \
                torch.autocast("cpu", torch.bfloat16, enabled=self.mixed_bf16):
            return self.compiled(*args, **kwargs)


@functools.cache
def qsdpa_pass():
    """torchao's post-grad pass holding the int8 attention patterns, built once per process (torchao registers
    them into whatever pass inductor's config holds at that moment, hence the patch)."""
    import torch._inductor.config as inductor_config
    from torchao.prototype.inductor.fx_passes.qsdpa_fusion import _qsdpa_init, custom_pass

    with inductor_config.patch(post_grad_custom_pre_pass=custom_pass):
        _qsdpa_init()
    return custom_pass


def compile_for_inference(model: nn.Module, mixed_bf16: bool = False,
                          int8_attention: bool = False) -> CompiledForInference:
    """The compiled ``model`` (pass it in eval mode: an exported graph refuses ``.eval()``)."""
    return CompiledForInference(model, mixed_bf16, int8_attention)


def weights_of(model: nn.Module) -> nn.Module:
    """The module holding the weights: the source of a compiled model, else the model itself."""
    return model.source if isinstance(model, CompiledForInference) else model


@torch.inference_mode()
def first_call_seconds(model: nn.Module, inputs: dict[str, Tensor]) -> float:
    """Wall seconds of one call: for a compiled model called with a new shape, mostly compilation."""
    start = time.perf_counter()
    model(**inputs)
    return time.perf_counter() - start
