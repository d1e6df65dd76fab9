"""Static int8 (PT2E export + X86InductorQuantizer) on a tiny random BERT: calibrated, close to float, one graph
for every batch shape, skips honoured, and the mistakes refused before any work."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.callbacks import Quantize
from lmshrink.errors import OptionError
from lmshrink.quantize import check_supported
from lmshrink.quantize.schemes import quantize_model, quantize_static
from tests.quantize.test_schemes import tiny_bert


def batches(count: int, size: int, length: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(5, 500, (size, length), generator=generator),
             "attention_mask": torch.ones(size, length, dtype=torch.long)} for _ in range(count)]


def quantize_ops(graph_module: torch.nn.Module) -> list[str]:
    return [str(node.target) for node in graph_module.graph.nodes if "quantize_per" in str(node.target)]


@pytest.fixture(scope="module")
def converted():
    """The converted (not compiled: no inductor in this test) graph of a tiny BERT, and its float source."""
    model = tiny_bert()
    float_model = copy.deepcopy(model)
    graph, result = quantize_static(model, "static-int8-x86", batches(4, 8, 16, 0), ["classifier"],
                                    compile_model=False)
    return float_model, graph, result


@pytest.mark.slow
def test_static_int8_is_close_to_float_on_unseen_shapes(converted):
    float_model, graph, result = converted
    for inputs in batches(1, 1, 7, 1) + batches(1, 5, 23, 2):  # shapes never seen in calibration
        with torch.no_grad():
            expected, got = float_model(**inputs).logits, graph(**inputs).logits
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) < 0.05 * float(expected.abs().max()) + 0.02


def test_static_int8_quantizes_the_linears_and_keeps_the_head(converted):
    float_model, graph, result = converted
    linears = [name for name, module in float_model.named_modules() if isinstance(module, torch.nn.Linear)]
    assert result.skipped == {"classifier": "in skip_modules"}
    assert result.quantized == sorted(set(linears) - {"classifier"})
    activation_quantize = [op for op in quantize_ops(graph) if "per_tensor" in op]
    assert len(activation_quantize) >= len(result.quantized)  # every quantized Linear gets int8 activations


@pytest.mark.slow
def test_calibration_fixes_the_activation_scales():
    """Different calibration data, different scales: the scales really come from the calibration batches."""
    scales = []
    for data in (batches(2, 4, 12, 0), [{key: value[:, :3] for key, value in batch.items()}
                                        for batch in batches(2, 4, 12, 0)]):
        graph, _ = quantize_static(tiny_bert(), "static-int8-x86", data, ["classifier"], compile_model=False)
        scales.append(sorted(float(node.args[1]) for node in graph.graph.nodes
                             if "quantize_per_tensor" in str(node.target) and isinstance(node.args[1], float)))
    assert scales[0] and scales[0] != scales[1]


def test_static_int8_is_refused_where_it_cannot_work(tmp_path):
    with pytest.raises(ValueError, match="lmshrink.quantize.apply with calibration batches"):
        quantize_model(tiny_bert(), "static-int8-x86")
    with pytest.raises(ValueError, match="cannot run on cuda: X86InductorQuantizer"):
        check_supported("static-int8-x86", "cuda")
    with pytest.raises(OptionError, match="compile=False"):
        Quantize(scheme="static-int8-x86", compile=False)
    with pytest.raises(OptionError, match="save_dir"):
        Quantize(scheme="static-int8-x86", save_dir=str(tmp_path / "q"))
    with pytest.raises(OptionError, match="calibration_samples is read only by calibrated schemes"):
        Quantize(scheme="bf16", calibration_samples=64)
    assert Quantize(scheme="static-int8-x86").compile and not Quantize(scheme="bf16").compile


def test_static_int8_exports_eager_attention_and_gives_the_model_back_as_it_was():
    """The graph has HF's eager attention (softmax between two matmuls, which inductor fuses) instead of SDPA's
    CPU flash kernel, and the float source keeps its own attention implementation afterwards."""
    model = tiny_bert()
    assert model.config._attn_implementation == "sdpa"
    graph, _ = quantize_static(model, "static-int8-x86", batches(1, 4, 12, 0), ["classifier"], compile_model=False)
    targets = [str(node.target) for node in graph.graph.nodes]
    assert not [target for target in targets if "scaled_dot_product" in target]
    assert [target for target in targets if "softmax" in target]
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.slow
@pytest.mark.parametrize("flags, mixed", [(["avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"], True),
                                          (["avx512_vnni", "avx512_bf16"], False)])
def test_on_an_amx_cpu_the_int8_graph_runs_as_int8_mixed_bf16(flags, mixed, monkeypatch):
    """The AMX check forced both ways (this machine may have no AMX: the speed of that path is measured only on one
    that has): with AMX the compiled int8 graph runs under bf16 autocast (its logits come out bf16) and still
    predicts as the float model; without, it stays float32 (today's path)."""
    from lmshrink.quantize import static_int8

    monkeypatch.setattr(static_int8, "cpu_name_and_flags", lambda: ("forced", flags))
    model = tiny_bert()
    float_model = copy.deepcopy(model)
    graph, _ = quantize_static(model, "static-int8-x86", batches(4, 8, 16, 0), ["classifier"])
    assert graph.mixed_bf16 is mixed
    inputs = batches(1, 8, 16, 3)[0]
    with torch.no_grad():
        expected, got = float_model(**inputs).logits, graph(**inputs).logits
    assert got.dtype == (torch.bfloat16 if mixed else torch.float32)
    assert float((got.float() - expected).abs().max()) < 0.05 * float(expected.abs().max()) + 0.05
