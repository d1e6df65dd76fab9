"""The prompts' KV cache for decoding: each prompt read once, prompts of similar length together, and (outside
autocast) a cache that decoding writes in place.

The audit samples k continuations of each prompt. Its prompts are read once, not k times: their cache is computed
once and repeated k times (:func:`shared_prompt_cache`); ``generate`` then reads only each prompt's last token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, StaticCache, StaticLayer


BUCKET_OVERHEAD_TOKENS = 96
"""What one more forward pass over prompts costs, in padded prompt tokens, for :func:`length_buckets`. Chosen on the
audit's 50 real toxicity prompts, SmolLM2 in float32 on 2 AMX Xeon cores: the prompt pass took 1.25-1.45 s in one
padded batch and, with this overhead set to 200 / 96 / 48 / 24 / 0 (2 / 3 / 4 / 5 / 22 buckets), 1.00-1.05 /
0.95-0.97 / 0.98-1.01 / 1.06-1.09 / 1.69-1.74 s."""


def length_buckets(lengths: Sequence[int], overhead: int = BUCKET_OVERHEAD_TOKENS) -> list[list[int]]:
    """The rows of a batch (``lengths``: tokens per row) grouped into buckets of similar length, each read as its own
    left-padded pass: the grouping of rows sorted by length that minimises the padded tokens plus ``overhead`` per
    pass (exact, by dynamic programming over the sorted rows). The audit's 50 real toxicity prompts (8-33 tokens)
    padded as one batch are 1,650 tokens for 860 real ones."""
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    # best[j]: cost of the first j sorted rows; a bucket of sorted rows i..j-1 pads to the length of row j-1
    best, start = [0] + [0] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        best[end], start[end] = min((best[begin] + (end - begin) * lengths[order[end - 1]] + overhead, begin)
                                    for begin in range(end))
    buckets, end = [], len(order)
    while end:
        buckets.append(order[start[end]:end])
        end = start[end]
    return buckets[::-1]


def shared_prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int,
                        bucket_overhead: int = BUCKET_OVERHEAD_TOKENS) -> Cache | None:
    """The KV cache of every prompt but its last token, computed once per prompt and repeated ``copies`` times
    (``generate`` then reads only the last token), or ``None`` where the model does not return a
    :class:`~transformers.Cache` (``generate`` then reads the whole prompt). Positions are the ones ``generate``
    gives a left-padded batch.

    Prompts of similar length are read together (:func:`length_buckets`), each bucket padded to its own longest
    prompt (``bucket_overhead``: see :func:`length_buckets`), and their caches are assembled into the left-padded
    batch's: a prompt's keys and values do not depend on the padding before it (masked), and the positions left
    of a shorter bucket are masked in decoding (zeros there). Only for caches of plain full-attention layers; any other cache is read in one padded pass."""
    if input_ids.shape[1] < 2:
        return None
    lengths = attention_mask.sum(-1).tolist()
    buckets = length_buckets(lengths, bucket_overhead)
    cache = _prompt_pass(model, input_ids, attention_mask) if len(buckets) == 1 else None
    if len(buckets) > 1:
        caches = []
        for rows in buckets:  # a bucket's columns: the last ones of the left-padded batch
            width = max(2, max(lengths[row] for row in rows))
            caches.append((rows, _prompt_pass(model, input_ids[rows, -width:], attention_mask[rows, -width:])))
            if not _plain(caches[-1][1]):  # sliding windows etc.: the whole batch in one pass instead
                caches = None
                break
        cache = _assembled(caches, input_ids.shape[1] - 1) if caches else _prompt_pass(model, input_ids,
                                                                                          attention_mask)
    if not isinstance(cache, Cache):
        return None
    cache.batch_repeat_interleave(copies)
    return cache


def _prompt_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Cache | None:
    """The cache of a left-padded batch of prompts but their last token, at ``generate``'s positions."""
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    extra = {"logits_to_keep": 1} if getattr(model, "_supports_logits_to_keep", lambda: False)() else {}
    output = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                   position_ids=positions[:, :-1], use_cache=True, **extra)
    return getattr(output, "past_key_values", None)


def _plain(cache) -> bool:
    """A cache of plain full-attention layers only (transformers' ``DynamicCache`` of ``DynamicLayer``)."""
    return type(cache) is DynamicCache and bool(cache.layers) and all(type(layer) is DynamicLayer
                                                                      for layer in cache.layers)


def _assembled(caches: list[tuple[list[int], DynamicCache]], length: int) -> DynamicCache:
    """One cache of ``length`` positions from the buckets' caches (``(rows, cache)``), each bucket's keys and values
    at the right end of its rows (left padding), zeros left of them."""
    rows_total = sum(len(rows) for rows, _ in caches)
    layers = []
    for index in range(len(caches[0][1].layers)):
        merged = []
        for field in ("keys", "values"):
            first = getattr(caches[0][1].layers[index], field)
            tensor = first.new_zeros(rows_total, first.shape[1], length, first.shape[3])
            for rows, cache in caches:
                part = getattr(cache.layers[index], field)
                tensor[rows, :, length - part.shape[2]:] = part
            merged.append(tensor)
        layers.append(tuple(merged))
    return DynamicCache(ddp_cache_data=layers)


def written_in_place(cache: Cache | None, config, length: int) -> Cache | None:
    """``cache`` copied into a :class:`~transformers.StaticCache` of ``length`` positions, where each decoding step
    writes its keys and values in place. transformers' ``DynamicCache`` concatenates every layer's keys and values
    with the new position at every step, copying the whole cache: with the audit's 200 rows on SmolLM2 in float32,
    ``aten::cat`` took a third of the profiled generation (497 against 442 new tokens/s in bare calls, 483 against
    461 in ``benchmarks/generate_toxicity.py`` with the scorer; the same texts). Only a
    cache of plain full-attention layers is copied (sliding windows and other layer kinds are returned as they
    are), only where transformers builds the same plain layers for the model's config, and only where keys and
    values have one dtype (a StaticCache holds both in the first keys' dtype). Not under autocast: there a step's
    keys and values need not keep the prompt pass's dtypes (the tests' tiny Llama under the benchmark's bf16
    autocast: a float32 prompt cache, bf16 at the first step)."""
    if not _plain(cache):
        return cache
    if torch.is_autocast_enabled(cache.layers[0].keys.device.type):
        return cache
    if any(layer.keys.dtype != layer.values.dtype for layer in cache.layers):
        return cache
    static = StaticCache(config=config, max_cache_len=length)
    if len(static.layers) != len(cache.layers) or not all(type(layer) is StaticLayer for layer in static.layers):
        return cache
    for source, target in zip(cache.layers, static.layers):
        target.update(source.keys, source.values)
    return static
