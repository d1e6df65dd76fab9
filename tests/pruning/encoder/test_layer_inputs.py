"""Starting a pass at layer l from stored hidden states (K-prune's speed-up) changes no number."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.pruning.encoder.arch import shape_of
from lmshrink.pruning.encoder.kprune import measure_sublayer, teacher_soft_labels
from lmshrink.pruning.settings import KPruneSettings
from lmshrink.pruning.encoder.layer_inputs import next_layer_inputs, start_at
from lmshrink.pruning.encoder.gates import masked
from tests.pruning.tiny import sample, tiny_encoders


@pytest.mark.parametrize("name", ["bert", "distilbert"])
def test_a_pass_started_at_a_layer_equals_the_full_pass_bitwise(name):
    model = tiny_encoders(initializer_range=0.5)[name].eval()
    batches = sample()
    inputs = None
    for layer in range(shape_of(model).num_layers - 1):
        inputs = next_layer_inputs(model, batches, layer, inputs)
        with torch.no_grad():
            for batch, hidden in zip(batches, inputs):
                with start_at(model, layer + 1, hidden):
                    started = model(**batch).logits
                assert torch.equal(started, model(**batch).logits)
                with start_at(model, layer + 1, hidden.flip(0)):  # the stored inputs are what the pass runs on
                    assert not torch.allclose(model(**batch).logits, started)


def test_measurement_from_stored_inputs_equals_the_full_pass():
    """K-prune's scores and normal equations for a target in layer 1, after layer 0 was pruned: the same bits
    whether the pass starts at the embeddings or at layer 1's stored inputs (student and teacher)."""
    model = tiny_encoders(initializer_range=0.5)["bert"].eval().requires_grad_(False)
    teacher = copy.deepcopy(model)
    shape, batches = shape_of(model), sample()
    probs = teacher_soft_labels(teacher, batches, 2.0)
    heads = torch.ones(shape.num_layers, shape.num_heads, dtype=torch.bool)
    neurons = torch.ones(shape.num_layers, shape.ffn, dtype=torch.bool)
    heads[0, 1], neurons[0, ::3] = False, False  # layer 0 decided
    with torch.no_grad():
        sublayer = model.bert.encoder.layer[0].output.dense
        sublayer.weight.mul_(1.5)  # and re-fitted: the student differs from the teacher below the target
    with masked(model, heads.float(), neurons.float()):
        stored = (next_layer_inputs(model, batches, 0, None), next_layer_inputs(teacher, batches, 0, None))
    for target in [(1, "mha"), (1, "ffn")]:
        full = measure_sublayer(model, teacher, batches, probs, heads, neurons, target, KPruneSettings(), 10.0)
        started = measure_sublayer(model, teacher, batches, probs, heads, neurons, target, KPruneSettings(), 10.0,
                                   stored)
        assert torch.equal(full[0], started[0]) and torch.equal(full[1], started[1])
        assert torch.equal(full[2].gram, started[2].gram) and torch.equal(full[2].cross, started[2].cross)
        assert full[2].target_sq == started[2].target_sq and full[3] == started[3]
