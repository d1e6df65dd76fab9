import pytest
import torch

from lmshrink.pruning.encoder.magnitude import (
    encoder_linears,
    head_l1_scores,
    prune_unstructured_l1,
    structured_head_mask,
)
from lmshrink.pruning.encoder.gates import full_masks, masked
from tests.pruning.tiny import padded_batch, tiny_encoders


@pytest.mark.parametrize("amount", [0.2, 0.4, 0.6, 0.8])
def test_unstructured_global_l1_hits_the_sparsity_and_removes_the_smallest(amount):
    model = tiny_encoders()["bert"]
    before = torch.cat([linear.weight.detach().abs().flatten() for linear in encoder_linears(model)])
    classifier = model.classifier.weight.detach().clone()
    sparsity = prune_unstructured_l1(model, amount)
    assert sparsity == pytest.approx(amount, abs=1e-3)
    after = torch.cat([linear.weight.detach().flatten() for linear in encoder_linears(model)])
    threshold = before.sort().values[round(amount * before.numel()) - 1]
    assert (after[before < threshold] == 0).all() and (after[before > threshold] != 0).all()  # global, by magnitude
    assert torch.equal(model.classifier.weight, classifier)  # the head stays dense
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())  # made permanent
    model(**padded_batch())


def test_structured_heads_drop_the_lowest_l1_heads():
    model = tiny_encoders()["roberta"]
    scores = head_l1_scores(model)
    with torch.no_grad():  # make head (1, 2) clearly the weakest
        layer = model.roberta.encoder.layer[1]
        for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            linear.weight[16:24] *= 0.01
        layer.attention.output.dense.weight[:, 16:24] *= 0.01
    mask = structured_head_mask(model, amount=0.25)  # 2 of 8 heads
    assert mask.sum() == 6 and mask[1, 2] == 0
    assert head_l1_scores(model)[1, 2] < scores[1, 2]
    _, neurons = full_masks(model)
    with masked(model, mask, neurons):
        model(**padded_batch())
    with pytest.raises(ValueError, match=r"amount=1.0 must be in \[0, 1\)"):
        structured_head_mask(model, 1.0)
