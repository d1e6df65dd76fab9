"""K-prune against the spec's invariants (§7.2, 7.3, 7.10-7.15) on tiny random BERT/RoBERTa/DistilBERT."""

from __future__ import annotations

import copy

import pytest
import torch

from lmshrink.distill.losses import soft_target_kl_from_probs
from lmshrink.pruning.encoder.arch import shape_of
from lmshrink.pruning.encoder.arch import sublayer_modules
from lmshrink.pruning.flops import FlopsBudget, encoder_flops
from lmshrink.pruning.encoder.kprune import (
    KPruneSettings,
    kprune,
    kprune_steps,
    measure_sublayer,
    teacher_soft_labels,
)
from lmshrink.pruning.encoder.gates import full_masks, masked
from lmshrink.pruning.encoder.slicing import slice_encoder
from tests.pruning.tiny import sample, tiny_encoders

SEQ_LEN = 10.0


def settings(ratio: float, **overrides) -> tuple[FlopsBudget, KPruneSettings]:
    return FlopsBudget(ratio, SEQ_LEN), KPruneSettings(**overrides)


def kept_flops(model, result) -> float:
    shape = shape_of(model)
    return encoder_flops(shape, SEQ_LEN, result.head_mask.sum(1).tolist(), result.neuron_mask.sum(1).tolist())


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("ratio", [0.7, 0.4, 0.15])
def test_budget_is_respected_and_masked_equals_sliced(name, ratio):
    model = tiny_encoders(initializer_range=0.5)[name]
    result = kprune(model, sample(), *settings(ratio))
    full = encoder_flops(shape_of(model), SEQ_LEN)
    assert kept_flops(model, result) <= ratio * full * (1 + 1e-9)
    assert all(step.budget_left >= -1e-6 * full for step in result.steps)
    batch = sample(1, seed=7)[0]
    with masked(model, result.head_mask, result.neuron_mask):
        expected = model(**batch).logits
    sliced = slice_encoder(copy.deepcopy(model), result.head_mask, result.neuron_mask)
    torch.testing.assert_close(sliced(**batch).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert"])
def test_identity_at_keep_ratio_one(name):
    model = tiny_encoders(initializer_range=0.5)[name]
    original = copy.deepcopy(model)
    result = kprune(model, sample(), *settings(1.0))
    assert result.head_mask.all() and result.neuron_mask.all()
    for (key, value), reference in zip(model.state_dict().items(), original.state_dict().values()):
        torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-5, msg=key)
    batch = sample(1, seed=7)[0]
    torch.testing.assert_close(model(**batch).logits, original(**batch).logits, rtol=1e-5, atol=1e-5)


def test_predictive_term_vanishes_when_student_is_teacher():
    """Spec §7.11 / pitfall 8: at the first step the KD loss and its mask gradient are ~0 (fp64)."""
    model = tiny_encoders(initializer_range=0.5)["bert"].double()
    batch = sample(1)[0]
    probs = teacher_soft_labels(model, [batch], 2.0)[0]
    heads, neurons = (mask.double().requires_grad_(True) for mask in full_masks(model))
    with masked(model, heads, neurons):
        loss = soft_target_kl_from_probs(model(**batch).logits, probs, 2.0)
    grads = torch.autograd.grad(loss, [heads, neurons])
    assert abs(loss.item()) < 1e-10
    assert max(float(g.abs().max()) for g in grads) < 1e-10
    # a different student (one head off) gives a clearly non-zero gradient: the check can fail
    heads2 = full_masks(model)[0].double()
    heads2[0, 0] = 0
    heads2.requires_grad_(True)
    with masked(model, heads2, neurons):
        loss = soft_target_kl_from_probs(model(**batch).logits, probs, 2.0)
    assert float(torch.autograd.grad(loss, heads2)[0].abs().max()) > 1e-6


def first_step_scores(model, batches, **overrides):
    shape = shape_of(model)
    teacher = copy.deepcopy(model)
    probs = teacher_soft_labels(teacher, batches, 2.0)
    keep_heads = torch.ones(shape.num_layers, shape.num_heads, dtype=torch.bool)
    keep_neurons = torch.ones(shape.num_layers, shape.ffn, dtype=torch.bool)
    return measure_sublayer(model, teacher, batches, probs, keep_heads, keep_neurons, (0, "mha"),
                            KPruneSettings(**overrides), SEQ_LEN)


def test_representational_score_is_exact_for_neurons_and_approximate_for_heads():
    """Spec §7.10: R_neuron[k] = mean over tokens and d of the squared change of the pre-LN FFN output when
    neuron k alone is zeroed. For heads the score drops the cross terms between a head's dimensions."""
    model = tiny_encoders(initializer_range=0.5)["bert"]
    batches = sample()
    shape = shape_of(model)
    f_head = 8 * SEQ_LEN * shape.hidden * shape.head_dim + 4 * SEQ_LEN**2 * shape.head_dim
    f_neuron = 4 * SEQ_LEN * shape.hidden
    head_score, neuron_score, _, tokens = first_step_scores(model, batches, lam_pred=0.0, lam_rep=1.0)
    layer = 1

    def ablation(sublayer, index, head_mask=None, neuron_mask=None):
        heads, neurons = full_masks(model)
        if head_mask is not None:
            heads[layer, index] = 0
        if neuron_mask is not None:
            neurons[layer, index] = 0
        projection = sublayer_modules(model, sublayer)[0]
        total = 0.0
        for batch in batches:
            outputs = {}
            handle = projection.register_forward_hook(lambda m, a, o: outputs.setdefault("o", o))
            with torch.no_grad(), masked(model, heads, neurons):
                model(**batch)
            handle.remove()
            outputs_dense = {}
            handle = projection.register_forward_hook(lambda m, a, o: outputs_dense.setdefault("o", o))
            with torch.no_grad():
                model(**batch)
            handle.remove()
            rows = batch["attention_mask"].bool()
            total += float((outputs["o"] - outputs_dense["o"])[rows].pow(2).mean(-1).sum())
        return total / tokens

    for neuron in (0, 5, 17):
        exact = ablation((layer, "ffn"), neuron, neuron_mask=True)
        assert float(neuron_score[layer, neuron]) * f_neuron / 1e9 == pytest.approx(exact, rel=1e-4)
    head_exact = [ablation((layer, "mha"), head, head_mask=True) for head in range(shape.num_heads)]
    head_approx = (head_score[layer] * f_head / 1e9).tolist()  # mu = d_h: mu x mean over dims = sum over dims
    assert head_approx != pytest.approx(head_exact, rel=1e-3)  # the cross terms are really dropped ...
    # ... and what remains is, independently computed, the sum over the head's dimensions of zeroing each one
    # alone: for dimension j of the projection input x, the output moves by x_j * W[:, j].
    projection = sublayer_modules(model, (layer, "mha"))[0]
    column_norms = projection.weight.detach().pow(2).sum(0)  # ||W[:, j]||^2, [hidden]
    per_dimension = torch.zeros(shape.hidden, dtype=torch.float64)
    for batch in batches:
        inputs = {}
        handle = projection.register_forward_pre_hook(lambda m, a: inputs.setdefault("x", a[0].detach()))
        with torch.no_grad():
            model(**batch)
        handle.remove()
        rows = batch["attention_mask"].bool()
        per_dimension += (inputs["x"][rows].double().pow(2) * column_norms.double() / shape.hidden).sum(0)
    per_dimension /= tokens
    expected = per_dimension.view(shape.num_heads, shape.head_dim).sum(-1).tolist()
    assert head_approx == pytest.approx(expected, rel=1e-4)


def test_scores_do_not_change_when_the_sample_is_duplicated():
    """Spec §7.12: P is averaged over sentences and R over tokens."""
    model = tiny_encoders(initializer_range=0.5)["roberta"]
    batches = sample()
    first = first_step_scores(copy.deepcopy(model), batches)
    twice = first_step_scores(copy.deepcopy(model), batches + batches)
    torch.testing.assert_close(twice[0], first[0], rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(twice[1], first[1], rtol=1e-5, atol=1e-12)
    assert twice[3] == 2 * first[3]


def test_rows_align_across_passes_and_runs_are_deterministic():
    """Spec §7.13-7.14: every pass sees the same non-pad tokens in the same order; same sample, same result."""
    models = [tiny_encoders(initializer_range=0.5)["distilbert"] for _ in range(2)]
    results = [kprune(model, sample(), *settings(0.4)) for model in models]
    steps = results[0].steps
    assert len({step.token_hash for step in steps}) == 1 and len({step.num_tokens for step in steps}) == 1
    assert torch.equal(results[0].head_mask, results[1].head_mask)
    assert torch.equal(results[0].neuron_mask, results[1].neuron_mask)
    for left, right in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(left, right)


def test_each_step_touches_only_its_sublayer_and_ffn_targets_exclude_their_heads():
    """Spec §7.15."""
    model = tiny_encoders(initializer_range=0.5)["bert"]
    shape = shape_of(model)
    before = copy.deepcopy(model.state_dict())
    decided_heads, decided_neurons = [], []
    for step, head_mask, neuron_mask in kprune_steps(model, sample(), *settings(0.4)):
        layer, kind = step.sublayer
        after = model.state_dict()
        changed = {key for key in after if not torch.equal(after[key], before[key])}
        projection = "attention.output.dense" if kind == "mha" else "output.dense"
        assert changed <= {f"bert.encoder.layer.{layer}.{projection}.weight",
                           f"bert.encoder.layer.{layer}.{projection}.bias"}
        before = copy.deepcopy(after)
        heads_left = shape.num_layers - layer - (1 if kind == "ffn" else 0)
        assert step.candidates == heads_left * shape.num_heads + (shape.num_layers - layer) * shape.ffn
        for layer_done, mask in decided_heads:
            assert torch.equal(head_mask[layer_done], mask)  # earlier decisions never change
        for layer_done, mask in decided_neurons:
            assert torch.equal(neuron_mask[layer_done], mask)
        (decided_heads if kind == "mha" else decided_neurons).append((layer, (head_mask if kind == "mha" else neuron_mask)[layer].clone()))


def test_weight_tuning_never_worsens_the_sample_fit():
    model = tiny_encoders(initializer_range=0.5)["bert"]
    result = kprune(model, sample(), *settings(0.4))
    tuned = [step.tuning for step in result.steps if "error_after" in step.tuning]
    assert tuned, "no sublayer was tuned"
    for tuning in tuned:
        assert tuning["accepted"] == (tuning["error_after"] <= tuning["error_before"])
    assert any(t["accepted"] and t["error_after"] < t["error_before"] for t in tuned)


def test_faithful_mode_reproduces_the_official_quirks():
    model = tiny_encoders(initializer_range=0.5)["bert"]
    result = kprune(model, sample(), *settings(1.0, faithful=True))
    assert not result.neuron_mask[-1].all()  # always prunes the global minimum, even at keep ratio 1
    model = tiny_encoders(initializer_range=0.5)["bert"]
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.output.dense.bias.fill_(0.3)
    result = kprune(model, sample(), *settings(0.1, faithful=True))
    for layer, heads in enumerate(result.head_mask):
        bias = model.bert.encoder.layer[layer].attention.output.dense.bias
        assert bool(heads.any()) or bool((bias == 0).all())  # fully pruned MHA: LN(x), its bias dropped
    assert not result.head_mask.any(dim=1).all(), "the test needs a fully pruned MHA sublayer"
