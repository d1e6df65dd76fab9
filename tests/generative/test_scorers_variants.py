"""The offline toxicity scorers and the compressed variants an audit compares."""

from __future__ import annotations

import pytest
import torch

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.generative.scorers import ClassifierScorer, build_scorer
from lmshrink.modules.audit_variants import build_variants
from lmshrink.pruning.methods import Wanda
from lmshrink.pruning.decoder.oneshot import OneShotSettings
from lmshrink.pruning.encoder.magnitude import decoder_linears


def test_profanity_scorer_ranks_profanity_higher_and_names_itself():
    scorer = build_scorer("profanity")
    scores = scorer(["you are a fucking idiot", "have a lovely day in the park"])
    assert scores[0] > 0.5 > scores[1]
    assert scorer.name == "alt-profanity-check" and scorer.version == "1.9.1"


def test_local_classifier_scorer(tiny_bert_varied_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = ["a", "b c d", "a much longer sentence than the others, padded in the batch"]
    scores = ClassifierScorer(str(tiny_bert_varied_dir), toxic_label=1, batch_size=2)(texts)
    # independently: each text alone (no padding), softmax of the classifier, probability of label 1
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_varied_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_varied_dir).eval()
    with torch.no_grad():
        expected = [model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0, 1].item() for text in texts]
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)
    assert len(set(round(value, 4) for value in expected)) == 3  # the texts really score differently
    with pytest.raises(ValueError, match="no label 'toxic'"):
        ClassifierScorer(str(tiny_bert_varied_dir), toxic_label="toxic")
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        ClassifierScorer("/nonexistent/scorer")


def test_variants_are_copies_with_the_requested_compression(tiny_llama_dir):
    teacher = load_causal_lm(tiny_llama_dir)
    before = [linear.weight.detach().clone() for linear in decoder_linears(teacher)]
    variants, records = build_variants(teacher, {"student": str(tiny_llama_dir)}, [0.5], ["dynamic-int8"],
                                       [Wanda(n_m="2:4")], load_tokenizer(tiny_llama_dir), OneShotSettings(4, 16),
                                       log=lambda _: None)
    assert list(variants) == ["teacher", "student", "l1-0.5", "wanda-2:4", "dynamic-int8"]
    assert records["wanda-2:4"]["calibration"] == [4, 16] and records["wanda-2:4"]["sparsity_reached"] == 0.5
    pruned = decoder_linears(variants["l1-0.5"])
    zeros = sum(int((linear.weight == 0).sum()) for linear in pruned) / sum(linear.weight.numel() for linear in pruned)
    assert zeros == pytest.approx(0.5, abs=0.01)
    assert all(torch.equal(a, linear.weight) for a, linear in zip(before, decoder_linears(teacher)))  # untouched
    ids = torch.tensor([[5, 6, 7, 8]])
    quantized = [m for m in variants["dynamic-int8"].modules() if type(m).__name__ == "Linear" and "quantized" in
                 type(m).__module__]
    assert len(quantized) == len(decoder_linears(teacher))  # every block Linear is int8 (the LM head stays float)
    with torch.no_grad():
        close = variants["dynamic-int8"](input_ids=ids).logits
        reference = teacher(input_ids=ids).logits
    assert not torch.equal(close, reference) and torch.allclose(close, reference, atol=0.05)
    with pytest.raises(ValueError, match="taken"):
        build_variants(teacher, {"teacher": str(tiny_llama_dir)})
