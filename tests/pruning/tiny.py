"""Tiny random encoders of the three supported architectures, built from configs, and small padded batches."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=3)


def tiny_encoders(initializer_range: float = 0.02):
    """``initializer_range`` well above the default gives models whose outputs vary with the input, so that
    pruning changes predictions (at 0.02 an untrained model is nearly constant)."""
    torch.manual_seed(0)
    init = dict(initializer_range=initializer_range)
    return {
        "bert": BertForSequenceClassification(BertConfig(vocab_size=100, **TINY, **init)).eval(),
        "roberta": RobertaForSequenceClassification(RobertaConfig(vocab_size=100, pad_token_id=1,
                                                                  max_position_embeddings=40, **TINY, **init)).eval(),
        "distilbert": DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, num_labels=3, **init)).eval(),
    }


def padded_batch():
    ids = torch.randint(5, 100, (3, 10), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(ids)
    attention_mask[0, 6:] = 0
    attention_mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": attention_mask}




def sample(num_batches: int = 4, labels: bool = False, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """A fixed pruning sample: padded batches of random token ids (with random labels for Kwon et al.)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        ids = torch.randint(5, 100, (6, 12), generator=generator)
        attention_mask = torch.ones_like(ids)
        attention_mask[0, 7:] = 0
        attention_mask[3, 4:] = 0
        batch = {"input_ids": ids, "attention_mask": attention_mask}
        if labels:
            batch["labels"] = torch.randint(0, 3, (6,), generator=generator)
        batches.append(batch)
    return batches
