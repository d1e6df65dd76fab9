import time

import pytest

from lmshrink.backbones import load_sequence_classifier, resolve_model_dir


def test_named_default_resolves_to_package_files():
    path = resolve_model_dir("minilm")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_hub_id_fails_fast_without_network():
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"model_path='bert-base-uncased': no such local directory.*hub id "
                                                r"\(org/name\).*'minilm'"):
        resolve_model_dir("bert-base-uncased")
    with pytest.raises(FileNotFoundError, match=r"model_path='google-bert/bert-base-uncased'.*not in the Hugging Face "
                                                r"cache.*hf download google-bert/bert-base-uncased"):
        resolve_model_dir("google-bert/bert-base-uncased")  # HF_HUB_OFFLINE=1 (conftest) and not cached
    assert time.monotonic() - start < 2.0


def test_model_dir_without_weights(tiny_bert_dir, tmp_path):
    (tmp_path / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"no weights in .*model.safetensors"):
        load_sequence_classifier(tmp_path, num_labels=3, new_head=True)


def test_dir_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_dir(tmp_path, option="model.model_path")


def test_classifier_head_gets_requested_labels(tiny_bert_dir):
    model = load_sequence_classifier(tiny_bert_dir, num_labels=5, new_head=True)  # fine-tuning: a new head
    assert model.config.num_labels == 5 and model.classifier.out_features == 5
