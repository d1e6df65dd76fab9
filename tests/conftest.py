"""Shared fixtures: tiny random models built from a config, and small data files in real column formats.

Nothing is downloaded: the tokenizer comes from the installed MiniLM package, weights are random.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lmshrink.backbones import load_tokenizer


def save_tiny_bert(
    directory: Path, num_labels: int = 3, dropout: float = 0.1, seed: int = 0, initializer_range: float = 0.02,
    model_class=BertForSequenceClassification,
) -> Path:
    """A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer, saved as a HF directory."""
    tokenizer = load_tokenizer("minilm")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model_class(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_bert_no_dropout_dir(tmp_path_factory) -> Path:
    """Dropout off: DDP ranks draw different dropout masks, so exact 1-vs-2-process equality needs none."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert_nodrop"), dropout=0.0)


@pytest.fixture(scope="session")
def tiny_bert_varied_dir(tmp_path_factory) -> Path:
    """Large random weights, so that an untrained model predicts all three classes (the default init
    predicts one class everywhere, which would make float-vs-quantized comparisons trivially equal)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert_varied"), dropout=0.0, initializer_range=0.5)


@pytest.fixture(scope="session")
def tiny_tagger_dir(tmp_path_factory) -> Path:
    """A random BERT token classifier with the 9 CoNLL-2003 tags and large weights (it predicts every tag)."""
    from transformers import BertForTokenClassification

    return save_tiny_bert(tmp_path_factory.mktemp("tiny_tagger"), num_labels=9, dropout=0.0, initializer_range=0.5,
                          model_class=BertForTokenClassification)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama (the SmolLM2 architecture) with the MiniLM tokenizer, as a HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = load_tokenizer("minilm")
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


LONGEST_FIRST = (  # measured with --durations (2 workers): 191 s, 46 s, 38 s, 28 s, then 20-25 s each
    "tests/test_readme.py::test_readme_commands_run_in_order",
    "tests/study/test_study.py::test_study_runs_reports_and_resumes",
    "tests/test_benchmarks.py::test_study_time_benchmark",
    "tests/study/test_study.py::test_a_calibrated_scheme_is_a_study_stage",
    "tests/study/test_study.py::test_a_study_with_two_jobs",
    "tests/test_backbones_gguf.py::",
    "tests/study/test_generative_study.py::test_generative_study_resumes",
    "tests/callbacks/test_quantization.py::test_two_process_ddp",
    "tests/modules/test_distill.py::",
)


def pytest_collection_modifyitems(items) -> None:
    """Start the longest tests first: with ``-n 2`` (the README's test command) a 2.5-minute test collected last
    would run alone at the end while the other worker idles."""
    rank = {item: next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
                       len(LONGEST_FIRST)) for item in items}
    items.sort(key=rank.__getitem__)  # stable: the rest keeps its order
