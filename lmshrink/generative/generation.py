"""Batched, seeded sampling of k continuations per prompt.

Three things make it faster than a plain ``generate(num_return_sequences=k, do_sample=True)`` and keep what it
samples from: the prompts are read once, not once per sample (their KV cache is repeated k times); the top-k /
top-p filter looks at the top-k candidates only instead of sorting the vocabulary; and the next token is drawn
among those candidates, where ``torch.multinomial`` draws a random number for every token of the vocabulary. On
SmolLM2 (49,152 tokens), 8 prompts x 4 samples, the sort and the draw took 65 ms and 32 ms of a step whose
float32 forward takes 150 ms. Outside autocast, the decoding cache is also written in place rather than grown
(:func:`written_in_place`).

Each continuation draws from its own generator, seeded from its prompt's seed and its sample index: what a
prompt gets does not depend on the batch it is in (batch size, neighbours, DDP shard), so the batch size is a
speed setting only (in float32 exactly; under bf16 up to the rounding the batch's shape changes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, StaticCache, StaticLayer
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

TIED_MARGIN = 16  # candidates read beyond the top k, for logits tied with the k-th (common in bf16)


@contextmanager
def weights_cast_once(device_type: str) -> Iterator[None]:
    """Gradient-free, inference mode off, autocast's cache on: under bf16 autocast each float32 weight is cast
    once per batch (the cache lives until the outermost autocast context closes), not once per forward.

    Lightning's ``bf16-mixed`` opens autocast with ``cache_enabled=False``, and autocast caches nothing under
    ``torch.inference_mode`` (pytorch/pytorch#165068), which Lightning evaluates in: every decoding step cast all
    135 M weights of SmolLM2 again, and a step of 32 rows took longer than in float32 (160 against 122 ms on 2 AMX
    cores; 98 ms with the casts kept). Without autocast this only turns gradients off."""
    autocast = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)
    with torch.inference_mode(False), torch.no_grad(), torch.autocast(device_type, dtype, enabled=autocast,
                                                                      cache_enabled=True):
        yield


def top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float, temperature: float = 1.0,
                min_tokens_to_keep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, token ids)`` of the candidates transformers' sampling keeps: temperature, then its
    ``TopKLogitsWarper``, then its ``TopPLogitsWarper``, the removed ones at ``-inf``. Computed on the ``top_k``
    (+ tied) highest logits; with ``top_k=0`` (off, as in transformers), or more ties with the k-th logit than
    :data:`TIED_MARGIN`, the warpers themselves run over the whole vocabulary."""
    if temperature != 1.0:
        scores = scores / temperature  # TemperatureLogitsWarper
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    candidates = min(k + TIED_MARGIN, scores.shape[-1])
    values, indices = scores.topk(candidates, dim=-1) if top_k and candidates < scores.shape[-1] else (None, None)
    if values is None or bool((values[:, -1:] >= values[:, k - 1:k]).any()):
        everything = torch.arange(scores.shape[-1], device=scores.device).expand_as(scores)
        return _warpers(scores, top_k, top_p, min_tokens_to_keep), everything
    values = values.masked_fill(values < values[:, k - 1:k], -float("inf"))  # top-k keeps every logit >= the k-th
    if top_p < 1.0:
        ascending = values.flip(-1)  # transformers sorts ascending and removes the low tail of mass 1 - top_p
        remove = ascending.softmax(-1).cumsum(-1) <= 1 - top_p
        remove[:, -min_tokens_to_keep:] = False
        values = values.masked_fill(remove.flip(-1), -float("inf"))
    return values, indices


def _warpers(scores: torch.Tensor, top_k: int, top_p: float, min_tokens_to_keep: int) -> torch.Tensor:
    if top_k:
        scores = TopKLogitsWarper(top_k, min_tokens_to_keep=min_tokens_to_keep)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p, min_tokens_to_keep=min_tokens_to_keep)(None, scores)
    return scores


class TopKTopPSampler(LogitsProcessor):
    """Draws the next token of each row from its :func:`top_k_top_p` candidates, softmax-weighted (the
    distribution of ``generate(do_sample=True, top_k=, top_p=, temperature=)``), and leaves only it at the maximum,
    so that ``generate(do_sample=False)`` takes it. Row ``i`` draws by inverting the candidates' cumulative
    distribution at one uniform number of ``generators[i]`` per step: seeded, a row repeats whatever rows it is
    batched with."""

    def __init__(self, generators: list[torch.Generator], top_k: int, top_p: float, temperature: float = 1.0) -> None:
        self.generators, self.top_k, self.top_p, self.temperature = generators, top_k, top_p, temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows of scores for {len(self.generators)} generators")
        values, indices = top_k_top_p(scores, self.top_k, self.top_p, self.temperature)
        cumulative = values.float().softmax(-1).cumsum(-1)
        uniform = torch.cat([torch.rand(1, generator=generator) for generator in self.generators])
        # right=True: the first candidate whose cumulative mass exceeds u, never one of mass 0 (a removed one)
        chosen = torch.searchsorted(cumulative, (uniform.to(scores.device) * cumulative[:, -1]).unsqueeze(-1),
                                    right=True).clamp_(max=values.shape[-1] - 1)
        tokens = indices.gather(-1, chosen)
        return torch.full_like(scores, -float("inf")).scatter(-1, tokens, 0.0)


def sample_generators(seeds: Sequence[int], num_samples: int) -> list[torch.Generator]:
    """One CPU generator per continuation, in the rows' order (each prompt ``num_samples`` times in a row), seeded
    from the prompt's seed and the sample's index."""
    return [torch.Generator().manual_seed(seed * 10_007 + sample) for seed in seeds for sample in range(num_samples)]


def shared_prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int) -> Cache | None:
    """The KV cache of every prompt but its last token, computed once per prompt and repeated ``copies`` times
    (``generate`` then reads only the last token), or ``None`` where the model does not return a
    :class:`~transformers.Cache` (``generate`` then reads the whole prompt). Positions are the ones ``generate``
    gives a left-padded batch."""
    if input_ids.shape[1] < 2:
        return None
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    extra = {"logits_to_keep": 1} if getattr(model, "_supports_logits_to_keep", lambda: False)() else {}
    output = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                   position_ids=positions[:, :-1], use_cache=True, **extra)
    cache = getattr(output, "past_key_values", None)
    if not isinstance(cache, Cache):
        return None
    cache.batch_repeat_interleave(copies)
    return cache


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
    if type(cache) is not DynamicCache or not cache.layers or not all(type(layer) is DynamicLayer
                                                                      for layer in cache.layers):
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


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts: list[str], num_samples: int, max_new_tokens: int,
                         seeds: Sequence[int], top_p: float = 0.9, temperature: float = 1.0,
                         top_k: int = 50, cache_in_place: bool = True) -> list[list[str]]:
    """``num_samples`` continuations (new text only) for each prompt, generated as one left-padded batch.

    ``seeds`` gives one seed per prompt (the audit derives it from the sampling seed and the prompt's position):
    a prompt with the same seed gets the same continuations in any batch. ``top_k=50`` is what transformers
    applies when none is given. Outside autocast the decoding cache is written in place
    (:func:`written_in_place`); ``cache_in_place=False`` keeps transformers' growing cache (the path before
    2026-12-05, for the benchmark's comparison; the same texts)."""
    if not prompts:
        return []
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one seed per prompt")
    tokenizer.padding_side = "left"  # generation appends on the right: prompts must end at the same position
    encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    cache = shared_prompt_cache(model, input_ids, attention_mask, num_samples)
    if cache_in_place:
        cache = written_in_place(cache, model.config, input_ids.shape[1] + max_new_tokens)
    # the rows generate(num_return_sequences=k) makes: each prompt k times in a row
    input_ids, attention_mask = input_ids.repeat_interleave(num_samples, 0), attention_mask.repeat_interleave(num_samples, 0)
    sampler = TopKTopPSampler(sample_generators(seeds, num_samples), top_k, top_p, temperature)
    output = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, do_sample=False,
        logits_processor=LogitsProcessorList([sampler]), max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    texts = tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
    return [texts[index * num_samples:(index + 1) * num_samples] for index in range(len(prompts))]
