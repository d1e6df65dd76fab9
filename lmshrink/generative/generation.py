"""Batched, seeded sampling of k continuations per prompt."""

from __future__ import annotations

import torch


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts: list[str], num_samples: int, max_new_tokens: int, seed: int,
                         top_p: float = 0.9, temperature: float = 1.0) -> list[list[str]]:
    """``num_samples`` continuations (new text only) for each prompt, generated as one left-padded batch.

    The sampling generator is seeded with ``seed`` before the batch, so the same prompts in the same batch
    give the same continuations (the seed of a batch is derived from its position by the caller)."""
    if not prompts:
        return []
    tokenizer.padding_side = "left"  # generation appends on the right: prompts must end at the same position
    encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    torch.manual_seed(seed)
    output = model.generate(
        input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], do_sample=True, top_p=top_p, temperature=temperature, max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples, pad_token_id=tokenizer.pad_token_id,
    )
    texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    return [texts[index * num_samples:(index + 1) * num_samples] for index in range(len(prompts))]
