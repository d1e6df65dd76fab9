"""Log-likelihood of whole sentences under a causal LM (for likelihood-based bias tests and perplexity)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lmshrink.distill.next_token import next_token_positions


def token_log_probs(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """``[B, S-1]`` ``log p(x_t | x_<t)`` for t = 1..S-1, zero where the token is not scored."""
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    valid = next_token_positions(attention_mask)
    return torch.where(valid, picked, torch.zeros_like(picked))


def sentence_log_likelihood(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(``[B]`` summed log-likelihood of each sequence's tokens after its first, ``[B]`` count of those tokens)."""
    log_probs = token_log_probs(logits, input_ids, attention_mask)
    counted = next_token_positions(attention_mask).sum(1)
    return log_probs.sum(1), counted


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str]) -> tuple[Tensor, Tensor]:
    """Summed log-likelihood and scored-token count of each text, in one padded batch. The BOS token (when the
    tokenizer has one) is prepended so that the first word is scored too."""
    prefix = tokenizer.bos_token or ""
    tokenizer.padding_side = "right"  # positions count from the first token (Llama ignores the mask for them)
    encoded = tokenizer([prefix + text for text in texts], return_tensors="pt", padding=True,
                        add_special_tokens=False)
    encoded = {key: value.to(model.device) for key, value in encoded.items()}
    logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    return sentence_log_likelihood(logits, encoded["input_ids"], encoded["attention_mask"])
