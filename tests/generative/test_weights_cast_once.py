"""Under Lightning's ``bf16-mixed`` evaluation (autocast with its cache off, inside ``torch.inference_mode``) the
audit casts each float32 weight to bf16 once per batch, not at every decoding step, and the outputs are the same."""

from __future__ import annotations

import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.profiler import profile
from transformers import AutoModelForCausalLM

from lmshrink.generative.generation import weights_cast_once


def casts_per_forward(model, ids: torch.Tensor, cast_once: bool) -> tuple[list[int], list[torch.Tensor]]:
    """(number of float32 -> bf16 copies, logits) of each of three forwards inside one Lightning test step."""
    counts, outputs = [], []
    with torch.inference_mode(), MixedPrecision("bf16-mixed", "cpu").autocast_context_manager():
        context = weights_cast_once("cpu") if cast_once else torch.no_grad()
        with context:
            for _ in range(3):
                with profile() as prof:
                    outputs.append(model(input_ids=ids).logits.float())
                counts.append(sum(event.count for event in prof.key_averages() if event.key == "aten::_to_copy"))
    return counts, outputs


def test_each_weight_is_cast_once_per_step_of_lightning_evaluation(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = torch.randint(0, 1000, (2, 7))
    linears = sum(isinstance(module, torch.nn.Linear) for module in model.modules())
    every_time, plain = casts_per_forward(model, ids, cast_once=False)
    once, cached = casts_per_forward(model, ids, cast_once=True)
    assert every_time[0] == every_time[1] == every_time[2]  # Lightning's context alone: the weights again each time
    assert once[0] == every_time[0] and once[1] == once[2] == once[0] - linears  # later forwards reuse the casts
    for a, b in zip(plain, cached):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_without_autocast_it_only_turns_gradients_off(tiny_llama_dir):
    with weights_cast_once("cpu"):
        assert not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert not torch.is_autocast_enabled("cpu")
