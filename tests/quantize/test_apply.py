"""``lmshrink.quantize.apply``, the one quantization path: what stays in float, calibration and compilation."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.quantize import apply, default_skip
from lmshrink.quantize.compiled import CompiledForInference, compile_for_inference
from lmshrink.quantize.schemes import quantize_model
from tests.pruning.decoder.test_structure import tiny_llama
from tests.quantize.test_schemes import tiny_bert
from tests.quantize.test_static_int8 import batches


def test_the_head_of_each_kind_of_model_stays_in_float_by_default():
    assert default_skip(tiny_bert()) == ["classifier"]
    assert default_skip(tiny_llama()) == ["lm_head"]
    quantized = apply(tiny_llama(), "dynamic-int8")
    assert quantized.skip == ["lm_head"] and quantized.result.skipped == {"lm_head": "in skip_modules"}
    assert isinstance(quantized.weights.lm_head, torch.nn.Linear)
    assert quantized.runnable is quantized.weights and not quantized.compiled


def test_apply_equals_the_scheme_with_the_head_skipped():
    """The callback, the study and the audit all quantize through apply: the same model as the scheme itself with
    the head kept (what each of them did by hand before)."""
    inputs = {"input_ids": torch.randint(5, 500, (4, 12), generator=torch.Generator().manual_seed(2))}
    by_hand, through_apply = tiny_bert(), tiny_bert()
    quantize_model(by_hand, "dynamic-int8", ["classifier"])
    apply(through_apply, "dynamic-int8")
    torch.testing.assert_close(through_apply(**inputs).logits, by_hand(**inputs).logits, rtol=0, atol=0)


def test_calibration_is_handed_in_for_calibrated_schemes_only():
    with pytest.raises(ValueError, match="needs calibration batches"):
        apply(tiny_bert(), "static-int8-x86")
    with pytest.raises(ValueError, match="reads no calibration batches; only \\['static-int8-x86'\\]"):
        apply(tiny_bert(), "dynamic-int8", calibration=batches(1, 4, 12, 0))
    with pytest.raises(ValueError, match="exist only compiled"):
        apply(tiny_bert(), "static-int8-x86", calibration=batches(1, 4, 12, 0), compile=False)


def test_compile_wraps_an_in_place_scheme_and_keeps_its_weights_apart():
    model = tiny_bert()
    quantized = apply(copy.deepcopy(model), "bf16", compile=True)
    assert isinstance(quantized.runnable, CompiledForInference) and quantized.compiled
    assert quantized.weights is quantized.runnable.source
    assert quantized.weights.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16


def compiled_graphs(runnable, shapes) -> int:
    """How many graphs dynamo compiled while ``runnable`` ran once on inputs of each of ``shapes``."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with torch.inference_mode():
        for size, length in shapes:
            runnable(**batches(1, size, length, seed=size + length)[0])
    return counters["stats"]["unique_graphs"]


class UnreadCalibration(list):
    """Calibration batches that fail the test if anything reads them."""

    def __iter__(self):
        raise AssertionError("the calibration batches were read")


def test_a_static_only_graph_for_any_shape_is_refused_before_any_work():
    """torchao's int8 attention compiles for static shapes only: ``apply`` refuses before it calibrates, and a
    direct ``compile_for_inference`` refuses too (one check, both paths)."""
    with pytest.raises(ValueError, match="any_shape=True with int8_attention=True"):
        apply(tiny_bert().eval(), "static-int8-x86", calibration=UnreadCalibration(), any_shape=True,
              int8_attention=True)
    with pytest.raises(ValueError, match="any_shape=True with int8_attention=True"):
        compile_for_inference(tiny_bert().eval(), int8_attention=True, any_shape=True)


EVALUATION_SHAPES = [(4, 12), (4, 9), (3, 7)]  # batches of falling length, a smaller last batch


@pytest.mark.slow
def test_any_shape_compiles_one_graph_for_an_evaluations_batches():
    """What the Quantize callback asks for: one compilation over batches of varying length and a smaller last
    batch (inductor's default compiles once per kind of change: three times here), for the static int8 graph too."""
    any_shape = apply(tiny_bert(), "bf16", compile=True, any_shape=True).runnable
    assert compiled_graphs(any_shape, EVALUATION_SHAPES) == 1
    static = apply(tiny_bert(), "static-int8-x86", calibration=batches(2, 4, 12, 0), any_shape=True).runnable
    assert compiled_graphs(static, EVALUATION_SHAPES) == 1
    with pytest.raises(ValueError, match="any_shape=True with int8_attention=True"):
        apply(tiny_bert(), "static-int8-x86", calibration=batches(1, 4, 12, 0), any_shape=True, int8_attention=True)


@pytest.mark.parametrize("scheme", ["bnb-nf4", "bnb-int8", "dynamic-int8"])
def test_quantized_layers_keep_the_models_mode(scheme):
    """A model quantized in eval mode is in eval mode throughout: the new layers were built in training mode,
    where bitsandbytes computes otherwise than in eval mode (NF4 on an AVX512-BF16 CPU: a packed bf16 kernel), so
    an evaluation gave other numbers than after a call to ``.eval()`` (the Quantize callback's latency timing)."""
    model = tiny_bert().eval()
    quantized = apply(model, scheme).runnable
    assert not any(module.training for module in quantized.modules())
    with torch.inference_mode():
        batch = batches(1, 4, 12, 0)[0]
        before = quantized(**batch).logits
        quantized.eval()
        torch.testing.assert_close(quantized(**batch).logits, before, rtol=0, atol=0)
    assert apply(tiny_bert().train(), scheme).runnable.training  # a model in training stays in training
