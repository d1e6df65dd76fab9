import torch

from lmshrink.quantize.fake_quant import convert_qat, is_prepared, prepare_qat
from tests.quantize.test_schemes import tiny_bert


def test_prepare_keeps_parameters_and_keys_and_convert_matches_fake_quant():
    model = tiny_bert()
    inputs = {"input_ids": torch.randint(5, 500, (4, 12), generator=torch.Generator().manual_seed(0))}
    reference = model(**inputs).logits
    keys = list(model.state_dict())
    query_weight = model.bert.encoder.layer[0].attention.self.query.weight
    names = prepare_qat(model, weight_bits=4, group_size=32, skip_modules=["classifier"])
    assert is_prepared(model) and len(names) == 13 and "classifier" not in names
    assert model.bert.encoder.layer[0].attention.self.query.weight is query_weight  # optimizer keeps training it
    assert list(model.state_dict()) == keys  # checkpoints written during QAT load into a prepared model
    fake = model(**inputs).logits
    assert 0 < (fake - reference).abs().max() < 0.3
    fake.sum().backward()
    assert query_weight.grad is not None  # straight-through gradients reach the float weights
    assert prepare_qat(model, 4, 32, ["classifier"]) == []  # idempotent
    with torch.no_grad():
        fake = model(**inputs).logits
        convert_qat(model, weight_bits=4, group_size=32)
        converted = model(**inputs).logits
    assert model.bert.encoder.layer[0].attention.self.query.weight.qdata.dtype == torch.int8
    torch.testing.assert_close(converted, fake, rtol=1e-5, atol=1e-5)
