"""Perplexity as the pruning papers report it: held-out text concatenated and cut into fixed windows.

Wanda's and SparseGPT's ``eval_ppl`` split the concatenated test text into ``n = T // L`` windows of L tokens,
score every next token of each window (no context across windows) and report ``exp(mean NLL)``. This differs
from the audit's per-sentence perplexity (each sentence scored alone after the tokenizer's BOS): sentences alone
have no context for their first words, so that figure is several times higher (README says which is which).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def perplexity_windows(token_ids: Tensor, window: int, max_windows: int | None = None) -> Tensor:
    """``[n, window]``: the first ``n = T // window`` windows (at most ``max_windows``); the remainder shorter
    than a window is left out."""
    count = len(token_ids) // window if max_windows is None else min(max_windows, len(token_ids) // window)
    if count < 1:
        raise ValueError(f"{len(token_ids)} held-out tokens make no window of {window}")
    return token_ids[:count * window].view(count, window)


@torch.no_grad()
def window_nll(model, windows: Tensor, batch_size: int = 4) -> tuple[float, int]:
    """(summed NLL, scored tokens) of every next token inside each window: sums, so shards of windows (DDP ranks)
    add up to the whole."""
    device = next(model.parameters()).device
    total, scored = 0.0, 0
    for batch in windows.split(batch_size):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        total += float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum"))
        scored += batch[:, 1:].numel()
    return total, scored


def windowed_perplexity(model, token_ids: Tensor, window: int, max_windows: int | None = None,
                        batch_size: int = 4) -> dict:
    """``{"perplexity", "nll", "windows", "window", "tokens"}`` of ``token_ids`` ``[T]`` in windows."""
    windows = perplexity_windows(token_ids, window, max_windows)
    total, scored = window_nll(model, windows, batch_size)
    return {"perplexity": math.exp(total / scored), "nll": total / scored, "windows": len(windows),
            "window": window, "tokens": scored}
