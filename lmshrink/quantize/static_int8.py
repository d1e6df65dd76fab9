"""Static int8 through the PyTorch 2 export path for x86: ``X86InductorQuantizer`` + inductor.

Activations get int8 scales fixed by calibration (per tensor, histogram observers) on a seeded sample of real
inputs, weights int8 per output channel; ``torch.compile`` with freezing then fuses quantize -> int8 GEMM ->
dequantize into oneDNN's int8 kernels (VNNI / AMX on CPUs that have them). Unlike the other schemes the model
is not changed in place: the result is a new (exported, then compiled) module, so it cannot be saved with
:func:`~lmshrink.quantize.saved_model.save_quantized`; keep the float checkpoint and quantize again.

The flow is torchao's (``prepare_pt2e`` / ``convert_pt2e``), as in its PT2E quantization tutorial; the batch and
sequence dimensions are exported dynamic so that one graph serves every batch shape. The graph is exported with
HF's eager attention (matmul, softmax, matmul), which inductor fuses around two GEMMs, rather than SDPA: on CPU,
SDPA's flash kernel is slow at small head sizes (MiniLM's 32: 36 of the int8 model's 132 ms at batch 32 x 64
tokens), and the eager export made the whole int8 MiniLM 1.2x faster, timed side by side (110 -> 90 ms).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lmshrink.machine import cpu_name_and_flags
from lmshrink.quantize.compiled import compile_for_inference


def _dynamic_shapes(model: nn.Module, example: dict[str, Tensor]) -> dict[str, dict[int, object]]:
    """Batch and sequence length dynamic, the latter up to the model's position table."""
    max_tokens = getattr(getattr(model, "config", None), "max_position_embeddings", 4096)
    batch, tokens = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("tokens", min=2, max=max_tokens)
    return {name: {0: batch, 1: tokens} for name in example}


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """HF's eager attention in ``model`` while the block runs, then its own again (a model whose attention cannot
    be switched keeps it)."""
    config = getattr(model, "config", None)
    original = getattr(config, "_attn_implementation", None)
    if original in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(original)


def _drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """Delete the parameters and buffers the converted graph no longer reads: the float weights, replaced by their
    int8 copies (without this the module holds both, and its measured size is larger than float's)."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    tensors = [name for name, _ in graph_module.named_parameters()] + [name for name, _ in graph_module.named_buffers()]
    for name in tensors:
        if name not in used:
            owner, _, attribute = name.rpartition(".")
            delattr(graph_module.get_submodule(owner), attribute)


def quantize_static_int8(model: nn.Module, calibration: Sequence[dict[str, Tensor]], skip: set[str],
                         compile_model: bool = True, mixed_bf16: bool | None = None,
                         int8_attention: bool = False, any_shape: bool = False) -> tuple[nn.Module, list[str]]:
    """The statically quantized copy of ``model`` (left unchanged) and the names of the Linear layers quantized.

    ``calibration``: model-input batches (the keys the model takes), every one run once through the observers.
    ``skip``: Linear layers kept in float (by name). ``compile_model=False`` returns the converted graph, which
    runs quantize / dequantize as reference float ops (same numbers as the compiled one up to rounding, float
    speed): for tests and inspection only. ``mixed_bf16``: compile under bf16 autocast ("int8-mixed-bf16",
    :class:`~lmshrink.quantize.compiled.CompiledForInference`); default: on CPUs with AMX
    (:func:`int8_mixed_bf16_here`), where bf16 work beside the int8 GEMMs is what the int8 graph loses to bf16.
    ``int8_attention``: quantize attention's two matmuls too (their inputs: q, k, v and the softmax) and compile
    each attention into torchao's one int8 kernel, generated for AMX (:func:`amx_tiles_usable`). Off by default:
    torchao's kernel takes static shapes only, so the graph compiles anew for every input shape (fixed-shape
    serving, padded to one length, not evaluation over batches of varying length). ``any_shape``: one graph for
    every input shape (:class:`~lmshrink.quantize.compiled.CompiledForInference`).
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    if not calibration:
        raise ValueError("static int8 needs at least one calibration batch")
    model = model.eval()
    example = {name: tensor.contiguous() for name, tensor in calibration[0].items()}  # strides are traced too
    with torch.no_grad(), eager_attention(model):
        exported = torch.export.export(model, args=(), kwargs=dict(example),
                                       dynamic_shapes=_dynamic_shapes(model, example), strict=False).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    if int8_attention:  # aten.matmul is attention's alone: every Linear exports as aten.linear
        quantizer.set_function_type_qconfig(torch.matmul, quantizer.get_global_quantization_config())
    for name in skip:
        quantizer.set_module_name_qconfig(name, None)
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(**batch)
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    allow_exported_model_train_eval(converted)  # Lightning calls .eval() on every module before evaluating
    quantized = sorted(name for name, module in model.named_modules()
                       if isinstance(module, nn.Linear) and name not in skip and module.weight.numel())
    if not compile_model:
        return converted, quantized
    mixed_bf16 = int8_mixed_bf16_here() if mixed_bf16 is None else mixed_bf16
    return compile_for_inference(converted, mixed_bf16, int8_attention, any_shape), quantized


def int8_mixed_bf16_here() -> bool:
    """Whether the static int8 graph runs as "int8-mixed-bf16" on this CPU: where it has AMX (``amx_int8`` and
    ``amx_bf16``). On an AMX Xeon the element-wise work and attention around the int8 GEMMs, left in float32,
    made the int8 graph slower than plain bf16 (issue 30's figures: 55 ms vs 40 ms at batch 32; 42 ms under bf16
    autocast); elsewhere the float32 graph is kept (0.28x fp32 on an AMD EPYC without AMX, 1.7x faster than
    bf16)."""
    flags = cpu_name_and_flags()[1]
    return "amx_int8" in flags and "amx_bf16" in flags


def amx_tiles_usable() -> bool:
    """PyTorch's own AMX check, read the way torchao's int8 attention lowering reads it to pick its AMX kernel
    (older PyTorch has it in ``torch._C._cpu``, newer in ``torch.cpu``)."""
    check = getattr(torch._C._cpu, "_is_amx_tile_supported", None) or getattr(torch.cpu, "_is_amx_tile_supported",
                                                                             None)
    return bool(check and check())
