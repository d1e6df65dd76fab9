"""Batched, seeded sampling of k continuations per prompt.

Three things make it faster than a plain ``generate(num_return_sequences=k, do_sample=True)`` and keep what it
samples from: the prompts are read once, not once per sample (their KV cache is repeated k times); the top-k /
top-p filter looks at the top-k candidates only instead of sorting the vocabulary; and the next token is drawn
among those candidates, where ``torch.multinomial`` draws a random number for every token of the vocabulary. On
SmolLM2 (49,152 tokens), 8 prompts x 4 samples, the sort and the draw took 65 ms and 32 ms of a step whose
float32 forward takes 150 ms. The prompts are read in buckets of similar length, and outside autocast the decoding
cache is written in place rather than grown (:mod:`lmshrink.generative.prompt_cache`); the drawn tokens are taken
as they are, without ``generate``'s ``argmax`` over the vocabulary (:func:`sampling_loop`).

Each continuation draws from its own generator, seeded from its prompt's seed and its sample index: what a
prompt gets does not depend on the batch it is in (batch size, neighbours, DDP shard), so the batch size is a
speed setting only (in float32 exactly; under bf16 up to the rounding the batch's shape changes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from lmshrink.generative.prompt_cache import shared_prompt_cache, written_in_place

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
        """As a logits processor of ``generate``: ``-inf`` everywhere but the drawn token (0)."""
        return torch.full_like(scores, -float("inf")).scatter(-1, self.draw(scores).unsqueeze(-1), 0.0)

    def draw(self, scores: torch.Tensor) -> torch.Tensor:
        """The next token of each row (a 1-D tensor of token ids)."""
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows of scores for {len(self.generators)} generators")
        values, indices = top_k_top_p(scores, self.top_k, self.top_p, self.temperature)
        cumulative = values.float().softmax(-1).cumsum(-1)
        uniform = torch.cat([torch.rand(1, generator=generator) for generator in self.generators])
        # right=True: the first candidate whose cumulative mass exceeds u, never one of mass 0 (a removed one)
        chosen = torch.searchsorted(cumulative, (uniform.to(scores.device) * cumulative[:, -1]).unsqueeze(-1),
                                    right=True).clamp_(max=values.shape[-1] - 1)
        return indices.gather(-1, chosen).squeeze(-1)


def sampling_loop(model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList, stopping_criteria,
                  generation_config, synced_gpus: bool = False, streamer=None, **model_kwargs) -> torch.LongTensor:
    """``generate``'s decoding loop (transformers' ``GenerationMixin._sample``, greedy, no streamer), given to
    ``generate`` as its ``custom_generate``, for a :class:`TopKTopPSampler` last among the logits processors: the
    sampler's drawn tokens are taken as they are. ``generate`` itself has every processor return scores over the
    whole vocabulary and takes their ``argmax``; for the audit's 200 rows of SmolLM2's 49,152 logits the sampler's
    ``-inf`` tensor, the ``argmax`` over it and the copy of the logits took about 30 ms of a 330 ms float32 step.
    Everything else is ``generate``'s: its inputs and cache preparation, its processors from the model's generation
    config (applied before the sampler), its stopping criteria, finished rows padded. It calls the helpers
    ``_sample`` calls (``_prefill``, ``_update_model_kwargs_for_generation``: private, for the pinned transformers;
    the tests compare the tokens with ``generate``'s own loop)."""
    *others, sampler = logits_processor or [None]
    if not isinstance(sampler, TopKTopPSampler) or synced_gpus or streamer is not None:
        raise ValueError("sampling_loop draws with a TopKTopPSampler last among the logits processors, without "
                         "synced GPUs or a streamer")
    others = LogitsProcessorList(others)
    pad = generation_config._pad_token_tensor
    pads_finished = any(hasattr(criteria, "eos_token_id") for criteria in stopping_criteria)
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    outputs = model._prefill(input_ids, generation_config, model_kwargs)
    with model._optimize_model_for_decode():
        while True:
            model_kwargs = model._update_model_kwargs_for_generation(
                outputs, model_kwargs, is_encoder_decoder=model.config.is_encoder_decoder)
            logits = outputs.logits[:, -1].float()
            tokens = sampler.draw(others(input_ids, logits) if others else logits)
            if pads_finished:
                tokens = torch.where(unfinished, tokens, pad.to(tokens.device))
            input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
            unfinished &= ~stopping_criteria(input_ids, None)
            if not unfinished.any():
                return input_ids
            inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=1, **model_kwargs)
            del outputs  # its logits: not kept through the next forward
            outputs = model(**inputs, return_dict=True)


def sample_generators(seeds: Sequence[int], num_samples: int) -> list[torch.Generator]:
    """One CPU generator per continuation, in the rows' order (each prompt ``num_samples`` times in a row), seeded
    from the prompt's seed and the sample's index."""
    return [torch.Generator().manual_seed(seed * 10_007 + sample) for seed in seeds for sample in range(num_samples)]


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
        pad_token_id=tokenizer.pad_token_id, custom_generate=sampling_loop,
    )
    texts = tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
    return [texts[index * num_samples:(index + 1) * num_samples] for index in range(len(prompts))]
