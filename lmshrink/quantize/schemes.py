"""The named quantization schemes and how each is applied (:func:`quantize_model` in place, :func:`quantize_static`
calibrated); callers go through :func:`lmshrink.quantize.apply`, which decides what stays float and compiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from lmshrink.quantize import bnb, dynamic_int8, torchao_schemes
from lmshrink.quantize.bfloat16 import cast_bfloat16
from lmshrink.quantize.embeddings import EmbeddingBits, quantize_embeddings, replace_module
from lmshrink.quantize.static_int8 import quantize_static_int8


@dataclass(frozen=True)
class Scheme:
    name: str
    backend: str
    description: str
    weight_bits: int
    needs_cuda: str | None = None
    """Why the scheme cannot run on CPU (None: it can)."""
    needs_cpu: str | None = None
    """Why the scheme runs on CPU only (None: not restricted)."""
    calibrated: bool = False
    """Needs calibration batches and returns a new (compiled) module instead of changing the model in place:
    :func:`~lmshrink.quantize.static_int8.quantize_static_int8`, not :func:`quantize_model`."""
    batch_dependent: str | None = None
    """Why an example's outputs depend on the other examples of its batch (None: they do not), so that a number
    measured with the scheme changes with the batching (said by the audit's log and under a study report's table)."""


SCHEMES = {
    scheme.name: scheme
    for scheme in [
        Scheme("bnb-int8", "bitsandbytes", "LLM.int8: int8 weights, 16-bit outlier features (threshold 6)", 8,
               batch_dependent="LLM.int8 keeps in 16 bits every feature that is an outlier in any row of the batch"),
        Scheme("bnb-nf4", "bitsandbytes", "4-bit NormalFloat weights, blocks of 64", 4),
        Scheme("bnb-fp4", "bitsandbytes", "4-bit float weights, blocks of 64", 4),
        Scheme("torchao-int8-dynamic", "torchao", "int8 per-token activations x int8 per-channel weights", 8),
        Scheme("torchao-int8-weight", "torchao", "int8 per-channel weights, float activations", 8),
        Scheme("torchao-int4-weight", "torchao", "IntxWeightOnlyConfig(int4): int4 per-group weights", 4),
        Scheme(
            "torchao-int4-tinygemm", "torchao", "Int4WeightOnlyConfig: int4 weights for the tinygemm CUDA kernel", 4,
            needs_cuda="Int4WeightOnlyConfig packs weights for a CUDA-only kernel (on CPU: torchao-int4-weight)",
        ),
        Scheme("dynamic-int8", "pytorch", "torch.ao quantize_dynamic: int8 weights, dynamic int8 activations", 8,
               needs_cpu="torch.ao's dynamic int8 Linear runs fbgemm / oneDNN CPU kernels (on CUDA: "
               "torchao-int8-dynamic)",
               batch_dependent="torch.ao's dynamic int8 Linear scales each call's activations by one range over the "
               "whole batch (per tensor; torchao-int8-dynamic scales per token)"),
        Scheme("bf16", "cast", "bfloat16 weights and activations, whole model (AMX / AVX512-BF16 on CPU)", 16),
        Scheme("static-int8-x86", "pt2e", "X86InductorQuantizer: static int8 activations (calibrated) x int8 "
               "per-channel weights, compiled by inductor (VNNI / AMX)", 8,
               needs_cpu="X86InductorQuantizer lowers to oneDNN's x86 CPU kernels", calibrated=True),
    ]
}


@dataclass
class QuantizationResult:
    """Which Linear layers a scheme quantized, and which it left in float and why."""

    scheme: str
    quantized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    embeddings: list[str] = field(default_factory=list)
    """Embedding tables quantized (``embeddings`` option); those left in float are in ``skipped`` too."""


SchemeName = Literal["bnb-int8", "bnb-nf4", "bnb-fp4", "torchao-int8-dynamic", "torchao-int8-weight",
                     "torchao-int4-weight", "torchao-int4-tinygemm", "dynamic-int8", "bf16", "static-int8-x86"]
"""The scheme names as a type, so that ``--help`` lists them and a typo fails when the command line is parsed."""
assert set(get_args(SchemeName)) == set(SCHEMES), "SchemeName and SCHEMES disagree"


def check_supported(scheme: str, device: torch.device | str | None = "cpu") -> Scheme:
    """Fail before any work when the scheme is unknown or cannot run on ``device`` (``None``: the name only)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is unknown; choose one of {sorted(SCHEMES)}")
    spec = SCHEMES[scheme]
    if device is None:
        return spec
    if spec.needs_cuda and torch.device(device).type != "cuda":
        raise ValueError(f"scheme={scheme!r} cannot run on {torch.device(device).type}: {spec.needs_cuda}")
    if spec.needs_cpu and torch.device(device).type != "cpu":
        raise ValueError(f"scheme={scheme!r} cannot run on {torch.device(device).type}: {spec.needs_cpu}")
    return spec


def cpu_only(scheme: str) -> bool:
    """Whether ``scheme``'s kernels exist on the CPU only (``dynamic-int8``, ``static-int8-x86``), so that it is
    evaluated there on any machine; False for an unknown name (:func:`check_supported` refuses it by name)."""
    return scheme in SCHEMES and SCHEMES[scheme].needs_cpu is not None


def matches_any(name: str, patterns: list[str]) -> bool:
    """``name`` is one of ``patterns``, lies under one, or ends with one (``classifier`` matches ``classifier.dense``)."""
    return any(name == pattern or name.startswith(pattern + ".") or name.endswith("." + pattern) for pattern in patterns)


def check_skip_modules(model: nn.Module, skip_modules: list[str] | None, option: str = "skip_modules") -> None:
    """Every ``skip_modules`` entry must match a module of ``model`` (:func:`matches_any`): a misspelt name would
    otherwise keep nothing in float, silently."""
    names = [name for name, _ in model.named_modules() if name]
    unmatched = [pattern for pattern in skip_modules or [] if not any(matches_any(name, [pattern]) for name in names)]
    if unmatched:
        heads = sorted({name.split(".")[0] for name in names})
        raise ValueError(f"{option}: {unmatched[0]!r} matches no module of the model (its top-level modules: "
                         f"{heads}); name a module or a name suffix such as 'classifier' or 'lm_head'")


def quantize_model(model: nn.Module, scheme: str, skip_modules: list[str] | None = None,
                   embeddings: EmbeddingBits = "float") -> QuantizationResult:
    """Quantize the ``nn.Linear`` layers of ``model`` in place with ``scheme`` (``bf16``: cast the whole model),
    and its embedding tables weight-only when ``embeddings`` is ``int8`` or ``int4``.

    Layers named (or under a module named) in ``skip_modules`` stay in float; the classification head is
    usually kept, as transformers' ``llm_int8_skip_modules`` does. The new layers take the model's mode: they are
    built in training mode (``nn.Module``'s default), where bitsandbytes computes otherwise than in eval mode (NF4
    on a CPU with AVX512-BF16 packs its weights for a bf16 kernel in eval mode only), so an evaluation ran them as
    no deployed model does, and a later ``.eval()`` (a latency timing) changed its numbers.
    """
    device = next(model.parameters()).device
    training = model.training
    check_supported(scheme, device)
    if SCHEMES[scheme].calibrated:
        raise ValueError(f"scheme={scheme!r} needs calibration data and returns a new compiled module: use "
                         f"lmshrink.quantize.apply with calibration batches")
    skip_modules = list(skip_modules or [])
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    result = QuantizationResult(scheme)
    if SCHEMES[scheme].backend == "cast":  # the whole model changes dtype: only the named modules stay float
        keep = {name for name, _ in model.named_modules() if name and matches_any(name, skip_modules)
                and not matches_any(name.rpartition(".")[0], skip_modules)}
        result.skipped = {name: "in skip_modules" for name in linears if matches_any(name, skip_modules)}
        result.quantized = cast_bfloat16(model, keep)
        _embeddings(model, embeddings, skip_modules, result)
        return result
    for name in linears:
        if matches_any(name, skip_modules):
            result.skipped[name] = "in skip_modules"
        elif linears[name].weight.numel() == 0:
            # a projection of a pruned-away head or FFN (zero width): nothing to quantize, and the int8 kernels'
            # range of an empty input is undefined (torch's dynamic int8 then returns garbage or fails)
            result.skipped[name] = "zero-width (pruned away)"
        elif scheme in ("bnb-nf4", "bnb-fp4") and device.type == "cpu" and not bnb.fits_cpu_4bit(linears[name]):
            result.skipped[name] = (
                f"out_features={linears[name].out_features} not divisible by {bnb.BNB_CPU_BLOCK_N} "
                f"(bitsandbytes CPU 4-bit kernel)"
            )
    targets = [name for name in linears if name not in result.skipped]
    if scheme == "bnb-int8":
        for name in targets:
            replace_module(model, name, bnb.to_int8(linears[name], device))
        result.quantized = targets
    elif scheme in ("bnb-nf4", "bnb-fp4"):
        for name in targets:
            replace_module(model, name, bnb.to_4bit(linears[name], device, quant_type=scheme.removeprefix("bnb-")))
        result.quantized = targets
    elif SCHEMES[scheme].backend == "torchao":
        result.quantized = torchao_schemes.quantize_torchao(model, scheme, set(result.skipped))
    else:
        result.quantized = dynamic_int8.quantize_dynamic_int8(model, set(result.skipped))
    _embeddings(model, embeddings, skip_modules, result)
    model.train(training)
    return result


def quantize_static(model: nn.Module, scheme: str, calibration: Sequence[dict[str, Tensor]],
                    skip_modules: list[str] | None = None, embeddings: EmbeddingBits = "float",
                    compile_model: bool = True, mixed_bf16: bool | None = None, int8_attention: bool = False,
                    any_shape: bool = False) -> tuple[nn.Module, QuantizationResult]:
    """A calibrated scheme (``static-int8-x86``): the embedding tables of ``model`` are quantized in place as
    :func:`quantize_model` does, then the quantized, compiled module is returned (``model`` is its float source;
    ``mixed_bf16``, ``int8_attention``, ``any_shape``: see
    :func:`~lmshrink.quantize.static_int8.quantize_static_int8`)."""
    check_supported(scheme, next(model.parameters()).device)
    if not SCHEMES[scheme].calibrated:
        raise ValueError(f"scheme={scheme!r} quantizes in place: use quantize_model")
    skip_modules = list(skip_modules or [])
    result = QuantizationResult(scheme)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and matches_any(name, skip_modules):
            result.skipped[name] = "in skip_modules"
        elif isinstance(module, nn.Linear) and module.weight.numel() == 0:
            result.skipped[name] = "zero-width (pruned away)"
    _embeddings(model, embeddings, skip_modules, result)
    quantized_model, result.quantized = quantize_static_int8(model, calibration, set(result.skipped), compile_model,
                                                             mixed_bf16, int8_attention, any_shape)
    return quantized_model, result


def _embeddings(model: nn.Module, bits: EmbeddingBits, skip_modules: list[str], result: QuantizationResult) -> None:
    skip = {name for name, _ in model.named_modules() if matches_any(name, skip_modules)}
    result.embeddings, skipped = quantize_embeddings(model, bits, skip)
    result.skipped |= skipped
