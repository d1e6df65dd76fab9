"""The one way lmshrink quantizes a model: :func:`apply` owns what stays in float, calibration and compilation.

The Quantize callback, the study (sizes and latency), the generative audit and its variants and the reload of a
saved quantized model all call it, so a model quantized by one of them equals the same model quantized by another.

    quantized = apply(model, "dynamic-int8")                       # in place; the head stays float
    quantized = apply(model, "static-int8-x86", calibration=batches)  # a new compiled graph, `model` its source
    quantized.runnable(**inputs)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from lmshrink.machine import cpu_line
from lmshrink.quantize.compiled import check_graph_options, compile_for_inference, weights_of
from lmshrink.quantize.embeddings import EmbeddingBits
from lmshrink.quantize.schemes import SCHEMES, QuantizationResult, check_supported, quantize_model, quantize_static
from lmshrink.quantize.static_int8 import amx_tiles_usable

CALIBRATION_SAMPLES = 128
"""Default size of a calibrated scheme's sample (training sentences), for the Quantize callback and the study alike."""
CALIBRATION_BATCH_SIZE = 32
"""Batch size of that sample (its padding, hence the observed activation ranges, depends on it)."""

HEADS = ("lm_head", "classifier")
"""The output heads kept in float by default: small, and their precision decides the prediction (as transformers'
``llm_int8_skip_modules`` keeps them)."""


def default_skip(model: nn.Module) -> list[str]:
    """The head of ``model`` kept in float: ``lm_head`` for a causal LM, ``classifier`` for a sequence or token
    classifier (the first of :data:`HEADS` the model has)."""
    names = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    return [next((head for head in HEADS if head in names), HEADS[1])]


@dataclass
class Quantized:
    """A quantized model: ``runnable`` is what to call (a compiled graph or the model itself), ``weights`` the
    module holding the quantized weights (what to size and save)."""

    runnable: nn.Module
    weights: nn.Module
    result: QuantizationResult
    compiled: bool
    skip: list[str]


def apply(model: nn.Module, scheme: str, *, embeddings: EmbeddingBits = "float",
          calibration: Sequence[dict[str, Tensor]] | None = None, compile: bool | None = None,
          skip: list[str] | None = None, mixed_bf16: bool | None = None,
          int8_attention: bool = False, any_shape: bool = False) -> Quantized:
    """Quantize ``model`` with ``scheme``.

    Args:
        model: In eval mode; changed in place (a calibrated scheme quantizes its embeddings in place and returns a
            new graph built from it).
        scheme: A name of :data:`~lmshrink.quantize.schemes.SCHEMES`.
        embeddings: ``int8`` / ``int4`` quantize the embedding tables weight-only; ``float`` keeps them.
        calibration: Batches for a calibrated scheme (``static-int8-x86``), drawn by the caller (a seeded sample of
            the training split); refused for the other schemes, which read none.
        compile: Run the result through ``torch.compile`` (inductor, freezing); default: only the calibrated
            schemes, whose int8 kernels exist only compiled (``False`` is refused for them).
        skip: Modules kept in float (by name, module prefix or name suffix); default :func:`default_skip`.
        mixed_bf16: A calibrated scheme's graph compiled and run under bf16 autocast ("int8-mixed-bf16");
            default: where the CPU has AMX (:func:`~lmshrink.quantize.static_int8.int8_mixed_bf16_here`). Refused
            for the other schemes.
        int8_attention: A calibrated scheme's attention in int8 too, compiled into torchao's fused kernel for AMX,
            one graph per input shape (:func:`~lmshrink.quantize.static_int8.quantize_static_int8`). Refused for the
            other schemes, and on a CPU without AMX.
        any_shape: When compiled, one graph for inputs of every batch size and length (a batch of one aside, which
            dynamo specializes), compiled at the first call:
            for an evaluation, whose batches vary in shape (by default a graph is compiled for the first shape and
            again at each kind of change). Refused with ``int8_attention`` (static shapes only).
    """
    calibrated = check_supported(scheme, next(model.parameters()).device).calibrated
    if calibrated and calibration is None:
        raise ValueError(f"scheme={scheme!r} needs calibration batches")
    if not calibrated and calibration is not None:
        raise ValueError(f"scheme={scheme!r} reads no calibration batches; only {calibrated_schemes()} do")
    if calibrated and compile is False:
        raise ValueError(f"scheme={scheme!r}: its int8 kernels exist only compiled (compile=False)")
    for name, asked in (("mixed_bf16", mixed_bf16 is not None), ("int8_attention", int8_attention)):
        if asked and not calibrated:
            raise ValueError(f"scheme={scheme!r}: {name} is read only by {calibrated_schemes()}")
    check_graph_options(int8_attention, any_shape)
    if int8_attention and not amx_tiles_usable():
        raise ValueError("int8_attention=True: torchao's int8 attention kernel is generated for AMX, which this CPU "
                         f"({cpu_line()}) cannot use")
    compile = calibrated if compile is None else compile
    skip = default_skip(model) if skip is None else list(skip)
    if calibrated:
        graph, result = quantize_static(model, scheme, calibration, skip, embeddings, compile_model=True,
                                        mixed_bf16=mixed_bf16, int8_attention=int8_attention, any_shape=any_shape)
        return Quantized(graph, weights_of(graph), result, compiled=True, skip=skip)
    result = quantize_model(model, scheme, skip, embeddings)  # the new layers take the model's mode
    return Quantized(compile_for_inference(model, any_shape=any_shape) if compile else model, model, result,
                     compiled=compile, skip=skip)


def calibrated_schemes() -> list[str]:
    """The schemes that calibrate on data (and exist only compiled)."""
    return [name for name, scheme in SCHEMES.items() if scheme.calibrated]
