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
def window_nlls(model, windows: Tensor, batch_size: int = 4) -> Tensor:
    """``[n]`` float64: the summed NLL of every next token inside each window (``window - 1`` tokens each): sums, so
    shards of windows (DDP ranks) add up to the whole, and a bootstrap can resample windows."""
    device = next(model.parameters()).device
    sums = []
    for batch in windows.split(batch_size):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), batch[:, 1:], reduction="none")
        sums.append(nll.double().sum(1).cpu())
    return torch.cat(sums) if sums else torch.zeros(0, dtype=torch.float64)


def window_nll(model, windows: Tensor, batch_size: int = 4) -> tuple[float, int]:
    """(summed NLL, scored tokens) over all windows."""
    return float(window_nlls(model, windows, batch_size).sum()), windows[:, 1:].numel()


def windowed_perplexity(model, token_ids: Tensor, window: int, max_windows: int | None = None,
                        batch_size: int = 4) -> dict:
    """``{"perplexity", "nll", "windows", "window", "tokens"}`` of ``token_ids`` ``[T]`` in windows."""
    windows = perplexity_windows(token_ids, window, max_windows)
    total, scored = window_nll(model, windows, batch_size)
    return {"perplexity": math.exp(total / scored), "nll": total / scored, "windows": len(windows),
            "window": window, "tokens": scored}
