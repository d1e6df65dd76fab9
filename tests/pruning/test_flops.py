"""Spec §7.1: the FLOPs model, against the closed form and the spec's table for BERT-base."""

import pytest

from lmshrink.pruning.encoder.arch import EncoderShape
from lmshrink.pruning.flops import encoder_flops, flops_budget, head_flops, neuron_flops

BERT_BASE = EncoderShape(num_layers=12, num_heads=12, head_dim=64, hidden=768, ffn=3072)


@pytest.mark.parametrize("task, s, f_head_m, f_neuron_m, total_g", [
    ("STS-B", 31.47, 12.63, 0.0967, 5.38), ("MNLI", 39.05, 15.75, 0.1200, 6.69), ("SQuAD", 170, 74.25, 0.5222, 29.94),
])
def test_bert_base_matches_the_spec_table(task, s, f_head_m, f_neuron_m, total_g):
    assert head_flops(s, 768, 64) / 1e6 == pytest.approx(f_head_m, abs=0.01)
    assert neuron_flops(s, 768) / 1e6 == pytest.approx(f_neuron_m, abs=1e-4)
    assert encoder_flops(BERT_BASE, s) / 1e9 == pytest.approx(total_g, abs=0.01)


def test_closed_form_additivity_and_unit_removal():
    s, shape = 40.0, BERT_BASE
    f_head, f_neuron = head_flops(s, 768, 64), neuron_flops(s, 768)
    full = encoder_flops(shape, s)
    assert full == pytest.approx(12 * (12 * f_head + 3072 * f_neuron))
    heads, neurons = [12] * 12, [3072] * 12
    heads[3] -= 1
    assert full - encoder_flops(shape, s, heads, neurons) == pytest.approx(f_head)
    neurons[7] -= 1
    assert full - encoder_flops(shape, s, heads, neurons) == pytest.approx(f_head + f_neuron)
    half = encoder_flops(shape, s, [6] * 12, [1536] * 12)
    assert half == pytest.approx(full / 2)  # additive and linear in the unit counts


def test_budget_semantics():
    assert flops_budget(BERT_BASE, 40, 0.6) == pytest.approx(0.6 * encoder_flops(BERT_BASE, 40))
    assert flops_budget(BERT_BASE, 40, 1.0) == encoder_flops(BERT_BASE, 40)
    for bad in (0, 1.2, -0.1):
        with pytest.raises(ValueError, match=r"flops_keep_ratio=.* must be in \(0, 1\]"):
            flops_budget(BERT_BASE, 40, bad)
