"""Static int8 with attention in int8 (issue 30: int8 ahead of bf16 on AMX): torchao's qsdpa pass replaces each
attention of the exported BERT by one int8 attention op, and the result equals the unfused int8 graph.

On a CPU with AMX the op is torchao's kernel generated for AMX, and the second test runs it. Elsewhere the first test
forces PyTorch's AMX check off, so that torchao's lowering calls its ``qscaled_dot_product`` op instead of generating
the kernel; where that op has no CPU kernel (torchao's PyPI build), the reference semantics of torchao's own op test
stand in for it, so the fusion (which layers, which scales) is checked on every CPU.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch._dynamo.utils import counters

from lmshrink.quantize.schemes import quantize_static
from lmshrink.quantize.static_int8 import amx_tiles_usable
from tests.quantize.test_schemes import tiny_bert
from tests.quantize.test_static_int8 import batches


def reference_qsdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, q_scale=1.0,
                    q_zp=0, k_scale=1.0, k_zp=0, v_scale=1.0, v_zp=0, a_scale=1.0, a_zp=0, o_scale=1.0, o_zp=0):
    """``torchao::qscaled_dot_product`` for uint8 as torchao's ``test_ops`` defines it: dequantize q, k, v; softmax
    attention; the probabilities quantized and dequantized with ``a_scale``; the output quantized to uint8, laid out
    (batch, tokens, heads, dim) in memory as torchao's fake kernel says (inductor checks the strides)."""
    q, k, v = ((tensor.float() - zero) * step for tensor, step, zero in
               ((query, q_scale, q_zp), (key, k_scale, k_zp), (value, v_scale, v_zp)))
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(q.size(-1)))
    if attn_mask is not None:
        scores = scores + attn_mask.float()
    attention = scores.softmax(-1)
    attention = (torch.clamp(torch.round(attention / a_scale) + a_zp, 0, 255) - a_zp) * a_scale
    out = torch.clamp(torch.round(attention @ v / o_scale) + o_zp, 0, 255).to(torch.uint8)
    return out.transpose(1, 2).contiguous().transpose(1, 2)  # the layout torchao's fake kernel promises


@pytest.fixture
def qsdpa_op_on_cpu():
    """The reference above as the op's CPU kernel, only while the test runs and only where torchao has none."""
    if "CPU" in torch._C._dispatch_dump("torchao::qscaled_dot_product"):
        yield
        return
    library = torch.library.Library("torchao", "IMPL")
    library.impl("qscaled_dot_product", reference_qsdpa, "CPU")
    yield
    library._destroy()


def fused_and_reference(**graph) -> tuple[dict, list[torch.Tensor], list[torch.Tensor]]:
    """(inductor's counters, the compiled graph's logits, the unfused converted graph's logits) on unseen inputs of
    three shapes, batch 1 first: the order in which a graph compiled for dynamic shapes died of an illegal
    instruction in torchao's kernel (and a new length failed to compile)."""
    model = tiny_bert()
    calibration = batches(4, 8, 16, 0)
    reference, _ = quantize_static(copy.deepcopy(model), "static-int8-x86", calibration, ["classifier"],
                                   compile_model=False, **graph)
    compiled, _ = quantize_static(model, "static-int8-x86", calibration, ["classifier"], **graph)
    got, expected = [], []
    counters.clear()
    for size, length, seed in ((1, 16, 3), (8, 16, 4), (8, 12, 5)):
        inputs = batches(1, size, length, seed)[0]
        with torch.no_grad():
            got.append(compiled(**inputs).logits.float())
            expected.append(reference(**inputs).logits.float())
    return dict(counters["inductor"]), got, expected


def assert_close_to(got: list[torch.Tensor], expected: list[torch.Tensor], relative: float, absolute: float) -> None:
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.allclose(mine, theirs, atol=relative * float(theirs.abs().max()) + absolute), (mine, theirs)


@pytest.mark.slow
def test_each_attention_becomes_one_int8_op_equal_to_the_unfused_graph(monkeypatch, qsdpa_op_on_cpu):
    import torch._inductor.config as inductor_config

    for owner in (torch._C._cpu, torch.cpu):  # torchao's lowering reads whichever this PyTorch has
        monkeypatch.setattr(owner, "_is_amx_tile_supported", lambda: False, raising=False)
    with inductor_config.patch(fx_graph_cache=False):  # a graph compiled with the AMX kernel must not be reused
        fused, got, expected = fused_and_reference(mixed_bf16=False, int8_attention=True)
    # once per layer and per input shape: the graph is compiled for each shape
    assert fused.get("qsdpa_fuse_attention") == 3 * tiny_bert().config.num_hidden_layers
    assert_close_to(got, expected, 0.02, 0.01)


def test_attention_stays_float_unless_asked_and_int8_attention_is_refused_without_amx(monkeypatch):
    """Off by default (its kernel compiles per input shape): attention's matmuls read float inputs; asked for,
    they read dequantized int8. ``apply`` refuses it on a CPU without AMX and for the schemes that calibrate
    nothing."""
    from lmshrink.quantize import apply, static_int8

    graph, _ = quantize_static(tiny_bert(), "static-int8-x86", batches(2, 4, 12, 0), ["classifier"],
                               compile_model=False)
    with_attention, _ = quantize_static(tiny_bert(), "static-int8-x86", batches(2, 4, 12, 0), ["classifier"],
                                        compile_model=False, int8_attention=True)
    for converted, dequantized in ((graph, False), (with_attention, True)):
        matmuls = [node for node in converted.graph.nodes if str(node.target) == "aten.matmul.default"]
        assert len(matmuls) == 2 * tiny_bert().config.num_hidden_layers
        assert all(("dequantize" in str(argument.target)) is dequantized for node in matmuls for argument in node.args)
    monkeypatch.setattr(static_int8.torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(static_int8.torch._C._cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with pytest.raises(ValueError, match="int8_attention=True: .* AMX, which this CPU"):
        apply(tiny_bert(), "static-int8-x86", calibration=batches(1, 4, 12, 0), int8_attention=True)
    with pytest.raises(ValueError, match="scheme='bf16': int8_attention is read only by"):
        apply(tiny_bert(), "bf16", int8_attention=True)


@pytest.mark.slow
@pytest.mark.skipif(not amx_tiles_usable(), reason="needs a CPU with AMX: torchao generates its int8 attention kernel "
                    "for AMX only (the test above checks the fusion on any CPU)")
def test_on_amx_int8_attention_runs_torchaos_generated_kernel_for_every_shape():
    fused, got, expected = fused_and_reference(int8_attention=True)
    layers = tiny_bert().config.num_hidden_layers
    assert fused.get("qsdpa_fuse_attention") == 3 * layers
    assert fused.get("cpp_templated_kernel_counter", 0) >= 3 * layers  # generated kernels, not the op's fallback
    assert_close_to(got, expected, 0.05, 0.05)
