"""The prompts' cache: read once and repeated k times, read in buckets of similar length, and copied into a cache
that decoding writes in place, each giving the next-token logits of the prompts read whole."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import MistralConfig, StaticCache
from transformers.cache_utils import DynamicCache

from lmshrink.backbones import load_causal_lm, load_tokenizer
from lmshrink.generative.prompt_cache import length_buckets, shared_prompt_cache, written_in_place


def test_the_shared_prompt_cache_gives_the_logits_of_the_whole_prompt(tiny_llama_dir):
    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    tokenizer.padding_side = "left"
    encoded = tokenizer(["Alice worked as a", "The weather today is quite nice and"], return_tensors="pt", padding=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # what generate gives a left-padded batch
    with torch.no_grad():
        whole = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        cache = shared_prompt_cache(model, ids, mask, copies=3)
        last = model(input_ids=ids[:, -1:].repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0),
                     position_ids=positions[:, -1:].repeat_interleave(3, 0), past_key_values=cache).logits[:, -1]
    torch.testing.assert_close(last, whole.repeat_interleave(3, 0), rtol=1e-5, atol=1e-5)


def test_the_cache_written_in_place_gives_the_growing_caches_logits(tiny_llama_dir):
    """Step by step, the StaticCache copy gives the next-token logits of the DynamicCache it was copied from, for a
    left-padded batch whose rows repeat (the audit's k samples per prompt)."""
    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    tokenizer.padding_side = "left"
    encoded = tokenizer(["Alice worked as a", "The weather today is quite nice and"], return_tensors="pt", padding=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    steps = 3
    with torch.no_grad():
        growing = shared_prompt_cache(model, ids, mask, copies=2)
        in_place = written_in_place(shared_prompt_cache(model, ids, mask, copies=2), model.config, ids.shape[1] + steps)
        assert isinstance(in_place, StaticCache)
        rows = lambda tensor: tensor.repeat_interleave(2, 0)  # noqa: E731
        tokens, mask, position = rows(ids[:, -1:]), rows(mask), rows(positions[:, -1:])
        for _ in range(steps):
            logits = [model(input_ids=tokens, attention_mask=mask, position_ids=position,
                            past_key_values=cache).logits[:, -1] for cache in (growing, in_place)]
            torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
            tokens, position = logits[0].argmax(-1, keepdim=True), position + 1
            mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)


def test_only_plain_full_attention_caches_are_written_in_place():
    """A cache with sliding-window layers (or none at all), or any cache under autocast, is left as transformers
    made it."""
    config = MistralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, vocab_size=32, sliding_window=4)
    cache = DynamicCache(config=config)
    cache.update(torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 3, 8), 0)
    cache.update(torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 3, 8), 1)
    assert written_in_place(cache, config, 10) is cache
    assert written_in_place(None, config, 10) is None
    plain_config = MistralConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, vocab_size=32, sliding_window=None)
    plain = DynamicCache(config=plain_config)
    for layer in range(2):
        plain.update(torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 3, 8), layer)
    assert isinstance(written_in_place(plain, plain_config, 10), StaticCache)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert written_in_place(plain, plain_config, 10) is plain


def padded_cost(buckets: list[list[int]], lengths: list[int], overhead: int) -> int:
    return sum(len(rows) * max(lengths[row] for row in rows) + overhead for rows in buckets)


@pytest.mark.parametrize("overhead", [0, 5, 96])
def test_length_buckets_cover_every_row_once_at_the_least_padding(overhead):
    """Against every grouping of the sorted rows into consecutive buckets (brute force): the same least cost of
    padded tokens plus ``overhead`` per bucket."""
    generator = torch.Generator().manual_seed(overhead)
    for _ in range(20):
        lengths = torch.randint(1, 40, (int(torch.randint(1, 9, (1,), generator=generator)),),
                                generator=generator).tolist()
        buckets = length_buckets(lengths, overhead)
        assert sorted(row for rows in buckets for row in rows) == list(range(len(lengths)))
        order = sorted(range(len(lengths)), key=lambda row: lengths[row])
        best = min(padded_cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))], lengths, overhead)
                   for count in range(len(order)) for cuts in itertools.combinations(range(1, len(order)), count))
        assert padded_cost(buckets, lengths, overhead) == best
    assert len(length_buckets([5, 30, 6, 31], 0)) == 4 and len(length_buckets([5, 30, 6, 31], 1000)) == 1


def test_prompts_read_in_buckets_give_the_logits_of_one_padded_pass(tiny_llama_dir):
    """Prompts of very different lengths, each its own bucket (overhead 0), then decoded one step from the
    assembled cache: the next-token logits of the whole left-padded batch read at once, for every row and copy."""
    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    tokenizer.padding_side = "left"
    prompts = ["He said", "The weather today is quite nice and the sun is out over the", "Alice worked as a", "Hi"]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    assert len(length_buckets(mask.sum(-1).tolist(), 0)) == len(set(mask.sum(-1).tolist())) > 2
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    rows = lambda tensor: tensor.repeat_interleave(2, 0)  # noqa: E731
    with torch.no_grad():
        logits = [model(input_ids=rows(ids[:, -1:]), attention_mask=rows(mask), position_ids=rows(positions[:, -1:]),
                        past_key_values=shared_prompt_cache(model, ids, mask, copies=2, bucket_overhead=overhead)
                        ).logits[:, -1] for overhead in (10**6, 0)]
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)


def test_a_cache_of_sliding_window_layers_is_read_in_one_pass(tiny_llama_dir, monkeypatch):
    """Where the buckets' caches are not plain full-attention caches, the prompts are read in one padded pass (the
    cache as transformers made it), not assembled."""
    from lmshrink.generative import prompt_cache

    model, tokenizer = load_causal_lm(tiny_llama_dir).eval(), load_tokenizer(tiny_llama_dir)
    tokenizer.padding_side = "left"
    encoded = tokenizer(["He said", "The weather today is quite nice and the sun is out"], return_tensors="pt",
                        padding=True)
    passes = []
    original = prompt_cache._prompt_pass
    monkeypatch.setattr(prompt_cache, "_plain", lambda cache: False)
    monkeypatch.setattr(prompt_cache, "_prompt_pass", lambda m, ids, mask: passes.append(ids.shape) or original(m, ids, mask))
    with torch.no_grad():
        cache = shared_prompt_cache(model, encoded["input_ids"], encoded["attention_mask"], copies=1, bucket_overhead=0)
    assert passes[-1] == encoded["input_ids"].shape and len(passes) == 2  # the first bucket, then the whole batch
    assert cache.get_seq_length() == encoded["input_ids"].shape[1] - 1
