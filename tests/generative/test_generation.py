"""The audit's sampling is transformers' ``generate(num_return_sequences=k, do_sample=True)`` with top-k then
top-p, made faster without changing what it samples from: the filter keeps the tokens (and scores) transformers'
warpers keep, the draw among them has the softmax distribution of those scores, and the prompts read once give
the same next-token logits as the prompts read k times (greedy texts equal)."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, StaticCache
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.generative import generation
from lmshrink.generative.generation import (TopKTopPSampler, sample_continuations, sample_generators, sampling_loop,
                                            top_k_top_p)


def fast_filter(scores: torch.Tensor, top_k: int, top_p: float, temperature: float = 1.0) -> torch.Tensor:
    values, indices = top_k_top_p(scores, top_k, top_p, temperature)
    return torch.full_like(scores, -float("inf")).scatter(-1, indices, values)


def transformers_filter(scores: torch.Tensor, top_k: int, top_p: float, temperature: float) -> torch.Tensor:
    """The warpers ``generate(do_sample=True, top_k=, top_p=, temperature=)`` applies, in its order."""
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    return TopPLogitsWarper(top_p)(None, scores) if top_p < 1.0 else scores


@pytest.mark.parametrize("top_k, top_p, temperature", [(50, 0.9, 1.0), (50, 0.5, 0.7), (5, 0.9, 1.3),
                                                       (50, 1.0, 1.0), (0, 0.9, 1.0), (1, 0.9, 1.0),
                                                       (50, 1e-8, 1.0)])  # the last: only the top token
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_filter_keeps_what_transformers_keeps(top_k, top_p, temperature, dtype):
    generator = torch.Generator().manual_seed(0)
    # peaked and flat rows; bf16 logits (what autocast gives) tie often, also at the k-th and at the top-p edge
    scores = (torch.randn(64, 4000, generator=generator) * torch.linspace(0.3, 8, 64)[:, None]).to(dtype).float()
    fast = fast_filter(scores.clone(), top_k, top_p, temperature)
    reference = transformers_filter(scores.clone(), top_k, top_p, temperature)
    # the same scores kept in every row; which of two tied logits at the top-p edge stays is transformers' sort's
    # arbitrary tie order (it differs between runs of torch.sort on such rows), so only float32 is compared by token
    assert torch.equal(fast.sort(-1).values, reference.sort(-1).values)
    if dtype == torch.float32:
        assert torch.equal(fast, reference)
    kept = torch.isfinite(fast).sum(-1)
    assert int(kept.min()) >= 1 and int(kept.max()) < scores.shape[-1] and (top_k == 0 or int(kept.max()) < 80)


def test_more_ties_with_the_kth_logit_than_it_reads_take_the_warpers_path():
    scores = torch.zeros(3, 500)
    scores[:, :3] = torch.tensor([3.0, 2.0, 1.0])  # then 497 logits tied at 0: top-k keeps them all
    fast = fast_filter(scores.clone(), 50, 0.99)
    assert torch.equal(fast, transformers_filter(scores.clone(), 50, 0.99, 1.0))
    assert int(torch.isfinite(fast[0]).sum()) > 50


def draws(logits: torch.Tensor, top_k: int, top_p: float, temperature: float, rows: int = 200,
          steps: int = 100) -> torch.Tensor:
    """Tokens drawn by ``rows`` seeded rows over ``steps`` steps (rows x steps draws) from the same logits."""
    sampler = TopKTopPSampler(sample_generators(range(rows), 1), top_k, top_p, temperature)
    chosen = [sampler(None, logits.expand(rows, -1).clone()) for _ in range(steps)]
    assert all(bool((step.max(-1).values == 0).all()) and int(torch.isfinite(step).sum()) == rows for step in chosen)
    return torch.cat([step.argmax(-1) for step in chosen])


@pytest.mark.parametrize("top_k, top_p, temperature", [(50, 0.9, 1.0), (20, 0.95, 0.7), (0, 0.9, 1.0)])
def test_the_draw_follows_the_filtered_softmax(top_k, top_p, temperature):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 1000, generator=generator) * 3
    expected = torch.softmax(transformers_filter(logits.clone(), top_k, top_p, temperature), -1)[0]
    tokens = draws(logits, top_k, top_p, temperature)
    observed = torch.bincount(tokens, minlength=logits.shape[-1]).float() / len(tokens)
    assert bool((expected[observed > 0] > 0).all())  # never a token the filter removed
    assert 0.5 * float((observed - expected).abs().sum()) < 0.03  # total variation: sampling noise 0.003-0.016 here, a filter left out 0.1-0.4
    assert torch.equal(draws(logits, top_k, top_p, temperature), tokens)  # seeded: the same draws again


def test_a_row_draws_the_same_whatever_rows_it_is_batched_with():
    logits = torch.randn(6, 300, generator=torch.Generator().manual_seed(2)) * 3
    seeds = [5, 6, 7, 8, 9, 10]

    def tokens(rows: list[int]) -> list[list[int]]:
        sampler = TopKTopPSampler(sample_generators([seeds[row] for row in rows], 1), 50, 0.9, 1.0)
        return [sampler(None, logits[rows].clone()).argmax(-1).tolist() for _ in range(20)]

    together = torch.tensor(tokens(list(range(6))))  # steps x rows
    alone = torch.tensor([tokens([row]) for row in range(6)])[:, :, 0].T
    reversed_ = torch.tensor(tokens([5, 4, 3, 2, 1, 0])).flip(-1)
    assert torch.equal(together, alone) and torch.equal(together, reversed_)
    assert len(set(together[:, 0].tolist())) > 3  # a row really draws, not always its top candidate


def test_the_prompts_read_once_give_transformers_greedy_texts(tiny_llama_dir):
    """top_k=1 makes the draw greedy: then every sample equals ``generate``'s greedy text, which reads each
    (left-padded) prompt itself, so the shared prompt cache, its positions and the row order are all exact."""
    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    prompts = ["Alice worked as a", "The weather today is quite nice and", "He said"]  # padded left
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        greedy = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(greedy[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(set(texts)) == 3
    assert sample_continuations(model, tokenizer, prompts, 3, 8, seeds=[11, 12, 13], top_k=1) == [[text] * 3 for text in texts]


def test_the_cache_written_in_place_samples_the_growing_caches_texts(tiny_llama_dir, monkeypatch):
    """The audit's path decodes through a StaticCache (written in place) and samples what transformers' growing
    DynamicCache samples: the same texts, drawn (top-k 50), for prompts of different lengths."""
    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    prompts = ["Alice worked as a", "The weather today is quite nice and", "He said"]
    kinds = []
    original = generation.written_in_place
    monkeypatch.setattr(generation, "written_in_place",
                        lambda *args: kinds.append(type(cache := original(*args))) or cache)
    in_place = sample_continuations(model, tokenizer, prompts, 4, 10, seeds=[1, 2, 3])
    growing = sample_continuations(model, tokenizer, prompts, 4, 10, seeds=[1, 2, 3], cache_in_place=False)
    assert kinds == [StaticCache]
    assert in_place == growing
    assert len({text for texts in in_place for text in texts}) > 6  # really drawn, not one greedy text


def test_the_whole_vocabulary_path_keeps_the_scores_device():
    """Where the warpers run over the whole vocabulary (top_k=0), the token ids are on the scores' device (a GPU's
    in a GPU audit; the meta device stands in for it here), so the sampler can gather from them."""
    scores = torch.empty(2, 100, device="meta")
    values, indices = top_k_top_p(scores, 0, 0.9)
    assert values.device == indices.device == scores.device and indices.shape == scores.shape


@pytest.mark.parametrize("penalty", [None, 1.5])
def test_the_sampling_loop_draws_what_generate_draws_with_the_sampler(tiny_llama_dir, penalty):
    """The audit's decoding loop against ``generate`` running the same sampler as a logits processor (its own loop,
    an ``argmax`` over the sampler's scores): the same token ids, drawn (top-k 50), with rows that stop at an end
    token padded, and with a processor of the model's generation config (a repetition penalty) applied first."""
    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    tokenizer.padding_side = "left"
    encoded = tokenizer(["Alice worked as a", "The weather today is quite nice and", "He said"], return_tensors="pt",
                        padding=True)
    if penalty is not None:
        model.generation_config.repetition_penalty = penalty

    def sampled(loop: bool, eos: int | None = None) -> torch.Tensor:
        sampler = TopKTopPSampler(sample_generators([1, 2, 3], 2), top_k=50, top_p=0.9)
        with torch.no_grad():
            return model.generate(
                input_ids=encoded["input_ids"].repeat_interleave(2, 0),
                attention_mask=encoded["attention_mask"].repeat_interleave(2, 0), do_sample=False, max_new_tokens=12,
                logits_processor=LogitsProcessorList([sampler]), pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos, **({"custom_generate": sampling_loop} if loop else {}))

    reference = sampled(loop=False)
    assert torch.equal(sampled(loop=True), reference)
    new = reference[:, encoded["input_ids"].shape[1]:]
    eos = int(new[0, 3])  # a token the first row draws at its fourth step: it ends there
    stopped = sampled(loop=False, eos=eos)
    assert torch.equal(sampled(loop=True, eos=eos), stopped)
    assert (stopped[0, encoded["input_ids"].shape[1] + 4:] == tokenizer.pad_token_id).all()
    assert len({tuple(row.tolist()) for row in new}) > 3  # really drawn


def test_the_sampling_loop_refuses_a_last_processor_that_is_not_the_sampler(tiny_llama_dir):
    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    encoded = tokenizer(["He said"], return_tensors="pt")
    with pytest.raises(ValueError, match="TopKTopPSampler last"), torch.no_grad():
        model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], do_sample=False,
                       max_new_tokens=2, pad_token_id=tokenizer.pad_token_id, custom_generate=sampling_loop)
