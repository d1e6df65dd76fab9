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
    kernel, generated for AMX (:func:`~lmshrink.quantize.static_int8.amx_tiles_usable`), compiled for static shapes.
    ``any_shape``: one graph for inputs of every batch size and length, compiled at the first call (a batch of one
    still gets a graph of its own: dynamo specializes sizes 0 and 1). An evaluation's batches vary in length and
    its last batch is smaller: by default inductor compiles a static graph, then again with a dynamic length, then
    with a dynamic batch size, three compilations of ~15 s each for MiniLM on 2 cores, for the same speed (52.9
    against 52.2 ms at batch 32). Refused with ``int8_attention``."""

    def __init__(self, source: nn.Module, mixed_bf16: bool = False, int8_attention: bool = False,
                 any_shape: bool = False) -> None:
        super().__init__()
        check_graph_options(int8_attention, any_shape)
        self.source = source
        self.mixed_bf16 = mixed_bf16
        self.int8_attention = int8_attention
        # torchao's int8 attention kernel template takes static shapes only (a dynamic batch died of an illegal
        # instruction, a dynamic length failed to compile): one graph per input shape then
        self.compiled = torch.compile(source, dynamic=True if any_shape else False if int8_attention else None)

    def forward(self, *args, **kwargs):
        import torch._inductor.config as inductor_config

        passes = {"post_grad_custom_pre_pass": qsdpa_pass()} if self.int8_attention else {}
        with inductor_config.patch(freezing=True, **passes), \
                torch.autocast("cpu", torch.bfloat16, enabled=self.mixed_bf16):
            return self.compiled(*args, **kwargs)


def check_graph_options(int8_attention: bool, any_shape: bool) -> None:
    """Refuse a graph :class:`CompiledForInference` cannot build; :func:`~lmshrink.quantize.apply` asks first,
    before it calibrates and converts anything."""
    if any_shape and int8_attention:
        raise ValueError("any_shape=True with int8_attention=True: torchao's int8 attention kernel takes static "
                         "shapes only")


@functools.cache
def qsdpa_pass():
    """torchao's post-grad pass holding the int8 attention patterns, built once per process (torchao registers
    them into whatever pass inductor's config holds at that moment, hence the patch)."""
    import torch._inductor.config as inductor_config
    from torchao.prototype.inductor.fx_passes.qsdpa_fusion import _qsdpa_init, custom_pass

    with inductor_config.patch(post_grad_custom_pre_pass=custom_pass):
        _qsdpa_init()
    return custom_pass


def compile_for_inference(model: nn.Module, mixed_bf16: bool = False, int8_attention: bool = False,
                          any_shape: bool = False) -> CompiledForInference:
    """The compiled ``model`` (pass it in eval mode: an exported graph refuses ``.eval()``)."""
    return CompiledForInference(model, mixed_bf16, int8_attention, any_shape)


def weights_of(model: nn.Module) -> nn.Module:
    """The module holding the weights: the source of a compiled model, else the model itself."""
    return model.source if isinstance(model, CompiledForInference) else model


@torch.inference_mode()
def first_call_seconds(model: nn.Module, inputs: dict[str, Tensor]) -> float:
    """Wall seconds of one call: for a compiled model called with a new shape, mostly compilation."""
    start = time.perf_counter()
    model(**inputs)
    return time.perf_counter() - start
