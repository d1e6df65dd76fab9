"""The audit's batched generation (left padding, KV cache) on the real SmolLM2-135M: greedy texts in float32 equal
one-prompt-at-a-time generation, the audit's own path (each prompt read once, the draw among the top-k / top-p
candidates) made greedy with ``top_k=1`` gives the same texts, and under bf16 autocast (``--trainer.precision
bf16-mixed``) sampling draws from the float32 distribution up to bf16 rounding."""

from __future__ import annotations

import pytest
import torch

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.generative.generation import sample_continuations, top_k_top_p
from lmshrink.generative.prompts import toxicity_prompts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = load_causal_lm("smollm2").eval(), load_tokenizer("smollm2")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer, [prompt.text for prompt in toxicity_prompts(6, seed=0)]


def greedy(model, tokenizer, prompts: list[str], tokens: int) -> list[str]:
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(**encoded, do_sample=False, max_new_tokens=tokens, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)


def test_greedy_batched_left_padded_generation_equals_one_prompt_at_a_time_in_float32(smollm2):
    model, tokenizer, prompts = smollm2
    assert len({len(tokenizer(p)["input_ids"]) for p in prompts}) > 1  # the batch really is padded
    assert greedy(model, tokenizer, prompts, 12) == [greedy(model, tokenizer, [p], 12)[0] for p in prompts]


def test_the_audits_sampling_made_greedy_gives_the_greedy_texts(smollm2):
    model, tokenizer, prompts = smollm2
    texts = greedy(model, tokenizer, prompts, 12)
    assert sample_continuations(model, tokenizer, prompts, 2, 12, seeds=range(len(prompts)), top_k=1) == [[text] * 2 for text in texts]


def top_p_distribution(logits: torch.Tensor) -> torch.Tensor:
    """The next-token distribution the audit samples from (top-k 50, then top-p 0.9, renormalised)."""
    values, indices = top_k_top_p(logits.float(), 50, 0.9)
    return torch.zeros_like(logits, dtype=torch.float32).scatter(-1, indices, values.softmax(-1))


def test_bf16_autocast_samples_from_the_float32_distribution(smollm2):
    model, tokenizer, prompts = smollm2
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        exact = top_p_distribution(model(**encoded).logits[:, -1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = top_p_distribution(model(**encoded).logits[:, -1])
    total_variation = 0.5 * (exact - mixed).abs().sum(-1)
    assert float(total_variation.max()) < 0.05, total_variation
    assert float(exact.max(-1).values.min()) > 0.05  # peaked, real distributions: the check is not vacuous
