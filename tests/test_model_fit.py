"""A model is checked against the job before it is used (issue 28, principle 1): the kind, the head's size and
class names, the context, and no weight silently re-initialised. Each case drives the one loader every command
uses (:mod:`lmshrink.backbones`); the commands' own tables are in ``tests/test_user_mistakes.py``."""

from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from lmshrink.backbones import load_causal_lm, load_finetuned, load_sequence_classifier, model_config
from lmshrink.errors import OptionError
from lmshrink.model_fit import check_against_data, check_class_names, class_names, context_length, model_kind
from tests.conftest import save_tiny_bert


@pytest.fixture(scope="module")
def two_class_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("two_class"), num_labels=2)


def test_kinds_from_architectures():
    assert model_kind(["LlamaForCausalLM"]) == "causal_lm" and model_kind(["GPT2LMHeadModel"]) == "causal_lm"
    assert model_kind(["PrunedBertForSequenceClassification"]) == "sequence"
    assert model_kind(["BertForTokenClassification"]) == "token"
    assert model_kind(["BertModel"]) is None and model_kind(None) is None
    assert context_length({"max_position_embeddings": 512}) == 512 and context_length({"n_positions": 1024}) == 1024
    assert context_length({"model_type": "x"}) is None
    assert class_names({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}) is None
    assert class_names({"id2label": {"1": "b", "0": "a"}}) == ["a", "b"]


def test_a_head_of_another_size_is_refused_unless_a_new_head_is_trained(two_class_dir):
    with pytest.raises(OptionError, match=r"model_path='.*' has a 2-class head but the data has 3 classes"):
        load_sequence_classifier(two_class_dir, num_labels=3)
    # the gate / Compare / pruning path: a fine-tuned model read as it is
    with pytest.raises(OptionError, match=r"reference_path=.* has a 2-class head but the data has 3 classes"):
        load_finetuned(str(two_class_dir), 3, option="reference_path")
    replaced = load_sequence_classifier(two_class_dir, num_labels=3, new_head=True)  # fine-tuning replaces it
    assert replaced.classifier.out_features == 3


def test_the_fitting_head_is_loaded_with_its_trained_weights(tiny_bert_varied_dir):
    model = load_sequence_classifier(tiny_bert_varied_dir, num_labels=3)
    saved = AutoModelForSequenceClassification.from_pretrained(tiny_bert_varied_dir)
    assert torch.equal(model.classifier.weight, saved.classifier.weight)


def test_wrong_kinds_are_refused(tiny_bert_dir, tiny_llama_dir, tiny_tagger_dir):
    with pytest.raises(OptionError, match=r"model_path=.* is not a causal LM \(BertForSequenceClassification\)"):
        load_causal_lm(tiny_bert_dir)
    with pytest.raises(OptionError, match=r"teacher_path=.* is not a sequence classifier \(LlamaForCausalLM\)"):
        load_sequence_classifier(tiny_llama_dir, 3, option="teacher_path")
    with pytest.raises(OptionError, match=r"is not a sequence classifier \(BertForTokenClassification\)"):
        load_sequence_classifier(tiny_tagger_dir, 9)  # a tagger read as it is cannot classify sequences
    with pytest.raises(OptionError, match=r"is a causal LM \(LlamaForCausalLM\); lmshrink fine-tunes and distils"):
        load_sequence_classifier(tiny_llama_dir, 3, new_head=True)
    # fine-tuning may start from another task's encoder: the tagger's body, a new sequence head
    assert load_sequence_classifier(tiny_tagger_dir, 3, new_head=True).classifier.out_features == 3


def test_a_base_encoder_is_no_classifier_but_can_be_fine_tuned(tmp_path):
    from transformers import BertModel

    base = save_tiny_bert(tmp_path / "base", model_class=BertModel)
    with pytest.raises(OptionError, match=r"is not a sequence classifier \(BertModel\); fine-tune it first"):
        load_finetuned(str(base), 3, option="model_path")
    assert load_sequence_classifier(base, 3, new_head=True).classifier.out_features == 3


def test_context_is_checked_from_the_config(tiny_llama_dir, tiny_bert_dir):
    with pytest.raises(OptionError, match=r"--seq-len=512 is longer than the context of --model='.*' \(256 tokens\); "
                                          r"set --seq-len <= 256"):
        load_causal_lm(tiny_llama_dir, "--model", {"--seq-len": 512, "--heldout-window": 0})
    assert load_causal_lm(tiny_llama_dir, lengths={"--seq-len": 256}) is not None
    with pytest.raises(OptionError, match=r"--data.max_length=129 is longer than the context of model_path='x'"):
        check_against_data({"model_path": ("x", model_config(tiny_bert_dir))}, None, 129)


def test_a_weight_missing_from_the_files_is_refused(tiny_bert_varied_dir, tmp_path):
    import shutil

    broken = tmp_path / "no_head_weights"
    shutil.copytree(tiny_bert_varied_dir, broken)
    weights = load_file(broken / "model.safetensors")
    save_file({key: value for key, value in weights.items() if not key.startswith("classifier.")},
              broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(OptionError, match=r"2 weights the model needs are missing from its files "
                                          r"\(classifier.bias, classifier.weight\)"):
        load_sequence_classifier(broken, 3)


def test_class_names_must_match_the_data(tmp_path):
    config = {"id2label": {"0": "negative", "1": "neutral", "2": "positive"}}
    check_class_names(config, ["Negative", "neutral", "positive"], "model_path", "m")  # case is not a difference
    check_class_names(config, ["0", "1", "2"], "model_path", "m")  # unnamed data classes: nothing to compare
    check_class_names({"id2label": {"0": "LABEL_0"}}, ["a"], "model_path", "m")
    with pytest.raises(OptionError, match=r"model_path='m' predicts the classes \['negative', 'neutral', 'positive'\] "
                                          r"but the data's classes are \['stereotype', 'anti-stereotype', 'unrelated'\]"):
        check_class_names(config, ["stereotype", "anti-stereotype", "unrelated"], "model_path", "m")
