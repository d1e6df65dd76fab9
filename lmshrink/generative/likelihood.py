"""Log-likelihood of whole sentences under a causal LM (for likelihood-based bias tests and perplexity)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lmshrink.distill.next_token import next_token_positions
from lmshrink.generative.prefix_packing import pack_sharing_prefixes, packs_prefixes


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
    """Summed log-likelihood and scored-token count of each text, in one batch. The BOS token (when the tokenizer
    has one) is prepended so that the first word is scored too."""
    totals, counts = score_groups(model, tokenizer, [[text] for text in texts])
    return totals[:, 0], counts[:, 0]


@torch.no_grad()
def score_groups(model, tokenizer, groups: list[list[str]]) -> tuple[Tensor, Tensor]:
    """``[G, K]`` summed log-likelihood and scored-token count of each of the ``K`` texts of each group (e.g. the
    two sentences of a bias pair), as :func:`score_texts` scores them. A group's texts share one row and their
    common prefix is read once (:mod:`lmshrink.generative.prefix_packing`) where the model can take it; otherwise
    each text has a right-padded row of its own."""
    sizes = {len(group) for group in groups}
    if len(sizes) != 1:
        raise ValueError(f"groups of {sorted(sizes)} texts: every group must have as many")
    prefix = tokenizer.bos_token or ""
    if not packs_prefixes(model):
        totals, counts = _padded(model, tokenizer, [prefix + text for group in groups for text in group])
        return totals.view(len(groups), -1), counts.view(len(groups), -1)
    encoded = tokenizer([prefix + text for group in groups for text in group], add_special_tokens=False)["input_ids"]
    size = sizes.pop()
    packed = pack_sharing_prefixes([encoded[start:start + size] for start in range(0, len(encoded), size)],
                                   tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    device = model.device
    input_ids = packed.input_ids.to(device)
    logits = model(input_ids=input_ids, position_ids=packed.position_ids.to(device),
                   attention_mask=packed.attention_mask.to(device)).logits.float()
    log_norm = torch.logsumexp(logits, dim=-1)  # [R, L]: each position's normaliser, once however many read it
    rows, sources, targets, owners = [], [], [], []
    for group, (row, paths) in enumerate(zip(packed.rows, packed.paths)):
        for index, path in enumerate(paths):
            rows += [row] * (len(path) - 1)
            sources += path[:-1]
            targets += path[1:]
            owners += [group * size + index] * (len(path) - 1)
    rows, sources, targets, owners = (torch.tensor(values, dtype=torch.long, device=device)
                                      for values in (rows, sources, targets, owners))
    tokens = input_ids[rows, targets]
    picked = logits[rows, sources, tokens] - log_norm[rows, sources]
    totals = torch.zeros(len(encoded), device=device).index_add_(0, owners, picked)
    counts = torch.tensor([len(ids) - 1 for ids in encoded], device=device)
    return totals.view(len(groups), size), counts.view(len(groups), size)


def _padded(model, tokenizer, texts: list[str]) -> tuple[Tensor, Tensor]:
    """Summed log-likelihood and scored-token count of each (prefixed) text, one right-padded row each."""
    tokenizer.padding_side = "right"  # positions count from the first token (Llama ignores the mask for them)
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    encoded = {key: value.to(model.device) for key, value in encoded.items()}
    logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    return sentence_log_likelihood(logits, encoded["input_ids"], encoded["attention_mask"])
