"""TeacherFineTune on tiny random BERT / RoBERTa / DistilBERT: the shared step trains and reports preds."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from lmshrink.backbones import load_tokenizer
from lmshrink.metrics.groups import IGNORE_INDEX
from lmshrink.modules import TeacherFineTune


def _save(model_class, config, directory):
    tokenizer = load_tokenizer("minilm")
    torch.manual_seed(0)
    model_class(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(params=["bert", "roberta", "distilbert"])
def model_dir(request, tiny_bert_dir, tmp_path):
    vocab = load_tokenizer("minilm").vocab_size
    if request.param == "bert":
        return tiny_bert_dir
    if request.param == "roberta":
        config = RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=130, pad_token_id=0, num_labels=3)
        return _save(RobertaForSequenceClassification, config, tmp_path / "roberta")
    config = DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64, num_labels=3,
                              pad_token_id=0)
    return _save(DistilBertForSequenceClassification, config, tmp_path / "distilbert")


def _batch(tokenizer, labels):
    batch = dict(tokenizer(["a short text", "another, longer piece of text", "third"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor(labels)
    batch["groups"] = torch.tensor([0, 1, 1])
    return batch


def test_shared_step_on_each_architecture(model_dir):
    module = TeacherFineTune(model_path=str(model_dir), num_labels=3, freeze_word_embeddings=True)
    assert module.model.training  # dropout must be on for fine-tuning (from_pretrained returns eval mode)
    assert not module.model.get_input_embeddings().weight.requires_grad
    module.eval()  # deterministic forward for the comparisons below
    batch = _batch(load_tokenizer(model_dir), [0, 2, 1])
    out = module._shared_step(batch, "val")
    logits = module(batch)
    assert out["preds"].tolist() == logits.argmax(-1).tolist()
    assert torch.isclose(out["loss"], torch.nn.functional.cross_entropy(logits, batch["labels"]))


def test_ignored_rows_do_not_count_in_loss(tiny_bert_dir):
    module = TeacherFineTune(model_path=str(tiny_bert_dir), num_labels=3).eval()
    tokenizer = load_tokenizer(tiny_bert_dir)
    padded = module._shared_step(_batch(tokenizer, [0, 2, IGNORE_INDEX]), "val")["loss"]
    logits = module(_batch(tokenizer, [0, 2, 1]))
    assert torch.isclose(padded, torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 2])))
