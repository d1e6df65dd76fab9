"""Which tokens of a causal LM's batch are scored, and their negative log-likelihood: the training loss of a
causal student and the perplexity of the audit share these two functions (left or right padding)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def next_token_positions(attention_mask: Tensor) -> Tensor:
    """``[B, S-1]``: whether token t (t = 1..S-1) is scored, i.e. it and its predecessor are real tokens (works
    with left or right padding)."""
    mask = attention_mask.bool()
    return mask[:, 1:] & mask[:, :-1]


def next_token_nll(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Negative log-likelihood ``[N]`` of every scored next token (see :func:`next_token_positions`), flattened:
    the training and perplexity loss of causal LMs."""
    keep = next_token_positions(attention_mask)
    return F.cross_entropy(logits[:, :-1][keep].float(), input_ids[:, 1:][keep], reduction="none")
