"""Student construction: an all-layer copy equals the teacher; subsets, configs and tokenizer checks."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from lmshrink.distill.students import (
    layer_map,
    check_same_tokenizer,
    evenly_spaced_layers,
    num_layers,
    student_from_config,
    student_from_teacher_layers,
)

TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)


def tiny_models():
    torch.manual_seed(0)
    yield BertForSequenceClassification(BertConfig(vocab_size=100, num_labels=3, **TINY))
    yield RobertaForSequenceClassification(RobertaConfig(vocab_size=100, num_labels=3, pad_token_id=1,
                                                         max_position_embeddings=40, **TINY))
    yield DistilBertForSequenceClassification(DistilBertConfig(vocab_size=100, dim=32, n_layers=4, n_heads=4,
                                                               hidden_dim=64, num_labels=3))
    yield LlamaForCausalLM(LlamaConfig(vocab_size=100, num_key_value_heads=2, max_position_embeddings=64, **TINY))


@pytest.mark.parametrize("teacher", list(tiny_models()), ids=["bert", "roberta", "distilbert", "llama"])
def test_all_layer_copy_is_identical_and_subsets_run(teacher):
    teacher.eval()
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    reference = teacher(input_ids=ids).logits
    copy_all = student_from_teacher_layers(teacher, [0, 1, 2, 3]).eval()
    torch.testing.assert_close(copy_all(input_ids=ids).logits, reference, rtol=0, atol=0)
    student = student_from_teacher_layers(teacher, [1, 3]).eval()
    assert num_layers(student) == 2 and num_layers(teacher) == 4  # the teacher is untouched
    assert student(input_ids=ids).logits.shape == reference.shape
    assert all(p.requires_grad for p in student.parameters())
    if isinstance(student, LlamaForCausalLM):  # the KV cache is indexed by the new layer positions
        assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
        out = student.generate(ids[:, :4], max_new_tokens=3, do_sample=False)
        assert out.shape == (2, 7)


def test_layer_choices():
    assert evenly_spaced_layers(6, 3) == [1, 3, 5]
    assert evenly_spaced_layers(30, 15) == list(range(1, 30, 2))
    teacher = next(tiny_models())
    with pytest.raises(ValueError, match=r"student_layers=\[2, 1\]: need increasing block indices in 0..3"):
        student_from_teacher_layers(teacher, [2, 1])


def test_student_from_config_and_unknown_field():
    teacher = next(tiny_models())
    student = student_from_config(teacher, num_hidden_layers=2, hidden_size=16, intermediate_size=32)
    assert num_layers(student) == 2 and student.config.hidden_size == 16
    assert teacher.config.hidden_size == 32
    with pytest.raises(ValueError, match="BertConfig has no field 'hidden'"):
        student_from_config(teacher, hidden=3)


def test_tokenizer_mismatch_is_refused(tiny_bert_dir, tmp_path):
    from lmshrink.backbones import load_tokenizer

    teacher_tok = load_tokenizer(tiny_bert_dir)
    check_same_tokenizer(teacher_tok, load_tokenizer(tiny_bert_dir), "t", "s")
    other = teacher_tok.train_new_from_iterator(["a small other corpus of words"] * 10, vocab_size=200)
    with pytest.raises(ValueError, match="tokenizer mismatch: s .* does not use the tokenizer of t"):
        check_same_tokenizer(teacher_tok, other, "t", "s")


def test_layer_maps():
    # 0-based blocks, like student_layers: a 3-block student of a 6-block teacher copies blocks 1, 3, 5 and
    # matches them to the same teacher blocks under "uniform"
    assert layer_map(3, 6, "uniform") == [1, 3, 5] == evenly_spaced_layers(6, 3)
    assert layer_map(3, 6, "last") == [3, 4, 5]
    assert layer_map(2, 6, [0, 5]) == [0, 5]
    with pytest.raises(ValueError, match=r"need 2 teacher blocks \(0-based\) in 0..5"):
        layer_map(2, 6, [0, 6])
    with pytest.raises(ValueError, match="strategy 'middle'"):
        layer_map(2, 6, "middle")
